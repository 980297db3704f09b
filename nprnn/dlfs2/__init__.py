"""nprnn.dlfs2: the textbook's ``common`` package ("Deep Learning from Scratch 2") on nprnn.

The modules and public names of the book's ``common``: ``time_layers``, ``layers``, ``functions``,
``optimizer``, ``trainer``, ``util``, ``base_model``, ``np``, ``config``. Replacing ``common.`` by
``nprnn.dlfs2.`` in the imports of a chapter script and of its chapter's model files runs it on nprnn's
fast time layers with the book's math: the same constructors, attributes, random draws (from the global
``np.random``, as the book draws them) and results to float rounding. ``BaseModel.load_params`` reads the
book's ``.pkl`` files through nprnn's restricted unpickler, never plain pickle.

Nothing is imported here, as in the book's empty ``common/__init__.py``: import the modules.
"""
