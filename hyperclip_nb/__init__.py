__version__ = "0.3.0"
from . import meta_shapes_v1 as _meta_shapes_v1   # adds the 0.2.0 world ('v1') to meta_shapes' registry of worlds
