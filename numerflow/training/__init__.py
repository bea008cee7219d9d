"""The training loop's parts, each small and on its own: reading and batching the prepared rows
(data), the losses, distributed setup, and scoring validation by era. The loop itself, which a
reader follows top to bottom, is numerflow/stages/train.py."""
