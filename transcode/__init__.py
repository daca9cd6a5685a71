"""Transfer syntaxes and the conversions between them.

``instance``: a whole Part 10 instance re-encoded in another syntax (any
uncompressed one, or any compressed one an encoder is installed for);
``codecs``: one frame encoded or decoded; ``syntaxes``: the table of PS3.5
syntaxes and the media types PS3.18 pairs them with.
"""
from .codecs import CodecError, ConversionError, PixelDescription
from .instance import DECODABLE, can_transcode, transcode

__all__ = ["CodecError", "ConversionError", "DECODABLE", "PixelDescription", "can_transcode", "transcode"]
