"""Instance access: the one room where the archive's blobs meet the codecs, below the views and
free of Flask. ``header`` reads a stored or received instance's data set; ``frames`` reads pixel
data by byte range or decoded, one frame at a time (``FrameReader``); ``instances`` plans,
converts and streams whole instances; ``deidentify`` applies PS3.15's Basic Profile to a copy."""
