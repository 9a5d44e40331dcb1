"""Images in: open a dataset, choose exactly N rows per class, decode them once into the decode cache, serve them
from a store (device, host or disk), and augment batches on the device as the epoch plan draws them."""
