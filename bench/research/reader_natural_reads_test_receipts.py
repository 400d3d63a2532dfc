"""What the natural-reading reader (before QLoRA) reads on held-out receipts.

python bench/research/reader_natural_reads_test_receipts.py READER DATASET
"""

import json
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
import datasets
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from tasks.generation import generate

m = LlavaForConditionalGeneration.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
p = AutoProcessor.from_pretrained(sys.argv[1])
dd = datasets.load_from_disk(sys.argv[2])["test"].select(range(3))
outs = generate(m, p, list(dd["image"]), "Read the text naturally.", 260, 3)
for o, t in zip(outs, dd["target"], strict=True):
    print("TARGET total", json.loads(t).get("total"))
    print(o)
    print("----")
