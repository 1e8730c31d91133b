"""Files in and out: images and measurements, atomic output folders, stage files, figures, batch runs.

:mod:`~hvp_explore.io.images` (PNG/JPEG/.npy in, 8-bit PNG out), :mod:`~hvp_explore.io.atomic` (folders
that appear whole or not at all), :mod:`~hvp_explore.io.stages` (the files passed between command-line
stages and every output folder's writer), :mod:`~hvp_explore.io.figures` (contact sheets and plots), :mod:`~hvp_explore.io.html` (``report.html``),
:mod:`~hvp_explore.io.batch` (many observations, resumable and sharded), :mod:`~hvp_explore.io.weights`
(checksummed weight files).

Importing this package loads nothing: the command line reads and writes folders (``io.atomic``,
``io.files``, ``io.tables``) before torch is imported; the modules that need torch load on use.
"""
