import sys

from keras_rnnreg.cli import main

sys.exit(main())
