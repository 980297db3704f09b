"""The textbook's ``common/config.py``: ``GPU``, read once by ``nprnn.dlfs2.np`` when it is first imported.

The book's scripts switch CuPy on with ``from common import config; config.GPU = True`` before importing
anything else. nprnn's layers are NumPy code, so ``nprnn.dlfs2`` runs with ``GPU = False`` only; setting it
to ``True`` makes the import of ``nprnn.dlfs2.np`` fail with a message saying so.
"""

GPU = False
