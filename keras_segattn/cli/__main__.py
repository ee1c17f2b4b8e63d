import sys

from keras_segattn.cli import main

sys.exit(main())
