"""The remote peer of `cargo xtask interop` built on aiortc, an independent WebRTC stack.

It speaks the lab's signaling lines on stdin/stdout (what lab/driver/scenario.cpp speaks):
    SIG <conn> <offer|answer> <sdp with CR/LF escaped as \\r \\n>
    CTL <word>
and prints one `RESULT key=value ...` line on stdout for the runner. Logs go to stderr.

Usage: aiortc_peer.py --offer device|remote [--messages N] [--frames N]

With --offer remote it offers an ordered and an unordered data channel and a recvonly video
transceiver; with --offer device it answers what the device offered. Either way it sends
messages of 1 byte to 64 KB on both channels, checks that each comes back unchanged, and counts
the H.264 frames it decodes from the device's track. Exit 0 only when every echo matched.
"""

import argparse
import asyncio
import logging
import sys
import threading

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

# Loopback only: aioice leaves 127.0.0.1 out of its host candidates (the device binds only there),
# and aiortc adds a public STUN server unless told otherwise (this machine has no route out).
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

# The same mix as the lab's datachannel scenario: mostly small, some large, one at the 64 KB limit.
SIZES = [1, 17, 100, 512, 1200, 4096, 16384, 65536, 333, 9000]


def message_body(i: int) -> bytes:
    size = SIZES[i % len(SIZES)]
    return bytes((ord("a") + (i + k) % 26) for k in range(size))


def escape(sdp: str) -> str:
    return sdp.replace("\r", "\\r").replace("\n", "\\n")


def unescape(text: str) -> str:
    return text.replace("\\r", "\r").replace("\\n", "\n")


def send_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Inbox:
    """Lines from stdin; `take(prefix)` keeps the others for later waits, like the C++ driver."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.lines: list[str] = []
        self.closed = False
        self.changed = asyncio.Condition()
        self.loop = loop
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            asyncio.run_coroutine_threadsafe(self._push(line.rstrip("\n")), self.loop)
        asyncio.run_coroutine_threadsafe(self._push(None), self.loop)

    async def _push(self, line):
        async with self.changed:
            if line is None:
                self.closed = True
            else:
                self.lines.append(line)
            self.changed.notify_all()

    async def take(self, prefix: str, timeout: float = 60) -> str:
        async def wait():
            async with self.changed:
                while True:
                    for i, line in enumerate(self.lines):
                        if line.startswith(prefix):
                            return self.lines.pop(i)
                    if self.closed:
                        raise RuntimeError(f"the device went away while waiting for `{prefix}`")
                    await self.changed.wait()

        return await asyncio.wait_for(wait(), timeout)


async def exchange(channel, count: int) -> int:
    """Sends `count` messages one at a time on `channel`; returns how many came back intact."""
    echoes: asyncio.Queue = asyncio.Queue()
    channel.on("message", lambda message: echoes.put_nowait(message))
    verified = 0
    for i in range(count):
        body = message_body(i)
        channel.send(body)
        echo = await asyncio.wait_for(echoes.get(), 20)
        if echo != body:
            logging.error("%s: echo %d differs (%d bytes back for %d)", channel.label, i, len(echo), len(body))
            return verified
        verified += 1
    return verified


async def count_frames(track, counts: dict) -> None:
    while True:
        try:
            await track.recv()
        except MediaStreamError:
            return
        counts["decoded"] += 1


async def wait_open(channel) -> None:
    if channel.readyState == "open":
        return
    opened = asyncio.Event()
    channel.on("open", opened.set)
    await asyncio.wait_for(opened.wait(), 30)


async def run(args) -> int:
    inbox = Inbox(asyncio.get_running_loop())
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channels = []
    counts = {"decoded": 0}
    frame_tasks = []

    @pc.on("datachannel")
    def on_datachannel(channel):
        channels.append(channel)

    @pc.on("track")
    def on_track(track):
        logging.info("track %s", track.kind)
        if track.kind == "video":
            frame_tasks.append(asyncio.ensure_future(count_frames(track, counts)))

    if args.offer == "remote":
        channels.append(pc.createDataChannel("ordered"))
        channels.append(pc.createDataChannel("unordered", ordered=False))
        if args.video:
            pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        send_line("SIG 0 offer " + escape(pc.localDescription.sdp))
        answer = await inbox.take("SIG 0 answer ")
        await pc.setRemoteDescription(RTCSessionDescription(unescape(answer.split(" ", 3)[3]), "answer"))
    else:
        offer = await inbox.take("SIG 0 offer ")
        await pc.setRemoteDescription(RTCSessionDescription(unescape(offer.split(" ", 3)[3]), "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        send_line("SIG 0 answer " + escape(pc.localDescription.sdp))

    await inbox.take("CTL open", 60)
    for _ in range(300):  # the device's channels are announced to an answerer as they open
        if len(channels) >= 2:
            break
        await asyncio.sleep(0.1)
    if len(channels) < 2:
        raise RuntimeError(f"only {len(channels)} data channel(s) arrived")
    for channel in channels:
        await wait_open(channel)
    verified = 0
    for channel in channels:
        verified += await exchange(channel, args.messages)
    # The device streams 30 fps; give the decoder time for a few key frames after the exchange.
    for _ in range(100 if args.video else 0):
        if counts["decoded"] >= args.frames:
            break
        await asyncio.sleep(0.1)
    expected = args.messages * len(channels)
    result = (
        f"RESULT messages={verified} expected={expected} frames_received={counts['decoded']} "
        f"frames_decoded={counts['decoded']} channels={','.join(c.label for c in channels)}"
    )
    logging.info(result)
    send_line(result)
    send_line("CTL done")
    await inbox.take("CTL closed", 60)
    for task in frame_tasks:
        task.cancel()
    await pc.close()
    return 0 if verified == expected else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--offer", choices=["device", "remote"], required=True)
    parser.add_argument("--messages", type=int, default=20, help="messages per channel")
    parser.add_argument("--frames", type=int, default=30, help="decoded frames to wait for (10 s at most)")
    parser.add_argument("--no-video", dest="video", action="store_false", help="data channels only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aioice").setLevel(logging.WARNING)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
