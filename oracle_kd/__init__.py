"""oracle-kd: knowledge distillation of small CTC models from an Oracle Teacher."""

__version__ = "0.1.0"
