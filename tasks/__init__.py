"""receipt-llava: the step code. One module per pipeline stage, each with a `run_<stage>` core function."""

from PIL import Image

# Pillow's decompression-bomb guard, set on purpose for every image any step opens: 100 MP
# holds a 8,000 x 12,000 phone scan of a long receipt. Pillow warns above it and refuses at
# twice it; `tasks.predict.open_image` (predict and serving) refuses above it.
MAX_IMAGE_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
