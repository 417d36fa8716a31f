"`python -m hyperclip_nb`: the same as the `hyperclip_nb` console script."
import sys
from hyperclip_nb.cli import main

if __name__ == '__main__': sys.exit(main())
