import sys

from tools.recognize_build.build import main

sys.exit(main())
