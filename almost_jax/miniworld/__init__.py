"""The mini world: a procedurally generated instruction domain with a gold oracle.

``tasks`` (task families, held-out split), ``oracle`` (gold scorer, evaluation only),
``corpus`` (pretraining documents), ``tokenizer_train`` (SentencePiece on the corpus).
"""
