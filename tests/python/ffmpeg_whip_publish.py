"""Publishes synthetic H.264 + Opus to a WHIP endpoint with FFmpeg 8's native WHIP muxer, through PyAV.

    python ffmpeg_whip_publish.py URL BEARER_KEY SECONDS

The same as `ffmpeg -re -f lavfi -i testsrc2=size=320x240:rate=30 -f lavfi -i sine=frequency=400 -c:v libx264
-profile:v baseline -bf 0 -g 30 -tune zerolatency -preset ultrafast -pix_fmt yuv420p -c:a libopus -ar 48000 -ac 2
-f whip -authorization KEY URL`, for machines whose ffmpeg predates the WHIP muxer (PyAV 18 bundles FFmpeg 8).
Frames are sent in real time. Prints one JSON line (frames and audio packets muxed, FFmpeg's version) and exits 0;
any failure (offer refused, ICE or DTLS timing out, a send error) raises, and FFmpeg's log is on stderr.
Used by tests/e2e/ffmpeg_whip.rs.
"""

import json
import math
import os
import sys
import time
from array import array
from fractions import Fraction

import av
import av.logging

WIDTH, HEIGHT, FPS = 320, 240, 30
RATE, SAMPLES = 48000, 960  # 20 ms Opus frames


def video_frame(index):
    """A grey picture with a bright bar that moves one step per frame (so P-frames carry something)."""
    frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
    bar = (index * 4) % WIDTH
    y = frame.planes[0]
    row = bytearray([60 + (index % 64)]) * y.line_size
    row[bar : bar + 16] = b"\xeb" * len(row[bar : bar + 16])
    y.update(bytes(row) * HEIGHT)
    for plane in frame.planes[1:]:
        plane.update(bytes([128]) * (plane.line_size * (HEIGHT // 2)))
    frame.pts = index
    frame.time_base = Fraction(1, FPS)
    return frame


def tone():
    """20 ms of a 400 Hz sine, interleaved stereo s16 (a whole number of periods, so it repeats cleanly)."""
    samples = array("h")
    for i in range(SAMPLES):
        v = int(8000 * math.sin(2 * math.pi * 400 * i / RATE))
        samples.extend((v, v))
    return samples.tobytes()


def audio_frame(pts, pcm):
    frame = av.AudioFrame(format="s16", layout="stereo", samples=SAMPLES)
    frame.planes[0].update(pcm)
    frame.sample_rate = RATE
    frame.pts = pts
    frame.time_base = Fraction(1, RATE)
    return frame


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    url, key, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    av.logging.set_level(av.logging.VERBOSE if os.environ.get("ZIPIQ_TEST_FFMPEG_VERBOSE") else av.logging.WARNING)

    out = av.open(url, mode="w", format="whip", options={"authorization": key})
    video = out.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    video.options = {"profile": "baseline", "bf": "0", "g": str(FPS), "tune": "zerolatency", "preset": "ultrafast"}
    audio = out.add_stream("libopus", rate=RATE)
    audio.layout = "stereo"
    audio.bit_rate = 64000

    pcm = tone()
    counts = {"video_frames": 0, "video_packets": 0, "audio_packets": 0}
    start = time.monotonic()
    audio_pts = 0
    for i in range(int(seconds * FPS)):
        for packet in video.encode(video_frame(i)):
            out.mux(packet)
            counts["video_packets"] += 1
        counts["video_frames"] += 1
        while audio_pts < (i + 1) * RATE // FPS:
            for packet in audio.encode(audio_frame(audio_pts, pcm)):
                out.mux(packet)
                counts["audio_packets"] += 1
            audio_pts += SAMPLES
        delay = start + (i + 1) / FPS - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for stream in (video, audio):
        for packet in stream.encode(None):
            out.mux(packet)
    out.close()  # the WHIP DELETE
    counts["ffmpeg"] = av.ffmpeg_version_info
    counts["seconds"] = round(time.monotonic() - start, 2)
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
