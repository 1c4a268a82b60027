"""The web viewer (``rnncodec serve``): a local page that shows an image refine iteration by
iteration beside JPEG and WebP of the same size.

This package's ``__init__`` imports nothing, so that the command line can read ``limits`` without
loading the web framework; the app itself is ``rnncodec.web.app.create_app``.
"""
