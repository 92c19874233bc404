"""Writes the H.264 clip the interop device sends, so that remote peers have something real to decode.

Usage: make_clip.py OUT.h264

320x240, 30 fps, 2 s, constrained baseline (what every WebRTC H.264 decoder takes), ~1 Mbit/s,
an IDR every 30 frames, Annex-B with SPS/PPS before every IDR. Encoded by libx264 inside PyAV
(the `av` wheel aiortc depends on), from a moving pattern drawn here, so nothing is downloaded.
"""

import sys
from fractions import Fraction

import av

WIDTH, HEIGHT, FPS, FRAMES = 320, 240, 30, 60


def pattern(n: int) -> av.VideoFrame:
    """A moving gradient with a checkerboard in chroma, drawn straight into the YUV planes."""
    frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
    for index, plane in enumerate(frame.planes):
        width, height = (WIDTH, HEIGHT) if index == 0 else (WIDTH // 2, HEIGHT // 2)
        rows = bytearray()
        for y in range(height):
            if index == 0:
                row = bytes((x + y + 4 * n) % 256 for x in range(width))
            else:
                row = bytes(64 + 128 * ((x // 8 + y // 8 + n // 5 + index) % 2) for x in range(width))
            rows += row + bytes(plane.line_size - width)
        plane.update(bytes(rows))
    return frame


def main() -> int:
    out = sys.argv[1]
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height = WIDTH, HEIGHT
    codec.pix_fmt = "yuv420p"
    codec.framerate = Fraction(FPS, 1)
    codec.time_base = Fraction(1, FPS)
    codec.bit_rate = 1_000_000
    codec.options = {"profile": "baseline", "level": "31", "tune": "zerolatency", "x264-params": "keyint=30:min-keyint=30:scenecut=0:repeat-headers=1:aud=1"}
    with open(out, "wb") as f:
        for n in range(FRAMES):
            frame = pattern(n)
            frame.pts = n
            for packet in codec.encode(frame):
                f.write(bytes(packet))
        for packet in codec.encode(None):
            f.write(bytes(packet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
