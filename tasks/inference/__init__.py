"""Reading receipts with a model: OCR, generation (constrained or free), the served pyfunc."""
