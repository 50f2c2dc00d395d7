"""Test-wide setup. torch and transformers are imported FIRST: importing tensorflow (pulled in by
seqio) before transformers models segfaults the process."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402,F401
import transformers  # noqa: E402,F401
