"""Training (the ``train`` extra): distillation of the student, the intent classifier and
its keystroke decision, the ranking models. Never imported by the serving process; only
this package imports torch, sentence-transformers or scikit-learn."""
