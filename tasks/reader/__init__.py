"""The embedded tiny base: built from config offline and pretrained to read (`make pretrain`)."""
