"""The remote peer of the ESP-IDF end-to-end test: aiortc against an example built for ESP-IDF's
`linux` target, signaling through the example's console exactly as a person would with
`idf.py monitor` (the device prints its offer between markers; the answer is typed back, then a
line `END`).

Usage: idf_example_peer.py --elf build/…/datachannel_echo.elf --example datachannel_echo
       idf_example_peer.py --elf build/…/h264_sender.elf --example h264_sender [--frames N]

datachannel_echo: waits for the device's greeting on channel "echo", then sends text and binary
messages (up to 20,000 bytes) one at a time and checks that each comes back byte for byte.
h264_sender: waits for the "control" channel and counts the H.264 frames aiortc decodes.
Prints one `RESULT key=value ...` line on stdout and exits 0 only when everything matched.
The device's console is kept in --device-log (default: stderr) for a failure's post-mortem.
"""

import argparse
import asyncio
import logging
import sys

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from aiortc_peer import count_frames  # the lab's interop peer, beside this file

# Loopback only: the example binds ICE to 127.0.0.1 on the linux target (its Kconfig default),
# aioice leaves loopback out of its host candidates unless told, and no STUN server is used.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

OFFER_BEGIN = "----- OFFER"
OFFER_END = "----- END OFFER -----"
GREETING = "hello from ESP32"  # datachannel_echo_main.c sends it when the channel opens
ECHO_SIZES = [1, 5, 100, 1200, 4096, 20000, 16, 777]


def echo_body(i: int) -> bytes:
    size = ECHO_SIZES[i % len(ECHO_SIZES)]
    return bytes((i * 7 + k) % 256 for k in range(size))


class Device:
    """The example's process: its console lines, and a way to type into it."""

    def __init__(self, proc, log):
        self.proc = proc
        self.log = log
        self.lines: asyncio.Queue = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                await self.lines.put(None)
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.log.write(line + "\n")
            self.log.flush()
            await self.lines.put(line)

    async def offer(self, timeout: float) -> str:
        async def collect():
            inside, sdp = False, []
            while True:
                line = await self.lines.get()
                if line is None:
                    raise RuntimeError("the device exited before printing its offer")
                if line.startswith(OFFER_END):
                    return "\r\n".join(sdp) + "\r\n"
                if inside and line:
                    sdp.append(line)
                if line.startswith(OFFER_BEGIN):
                    inside = True

        return await asyncio.wait_for(collect(), timeout)

    async def type_answer(self, sdp: str):
        text = "".join(line + "\n" for line in sdp.splitlines() if line) + "END\n"
        self.proc.stdin.write(text.encode())
        await self.proc.stdin.drain()

    async def stop(self):
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        self.reader.cancel()


async def echo_exchange(channel, messages: int, timeout: float) -> tuple[int, str]:
    received: asyncio.Queue = asyncio.Queue()
    channel.on("message", received.put_nowait)
    greeting = await asyncio.wait_for(received.get(), timeout)
    if greeting != GREETING:
        return 0, f"greeting {greeting!r}"
    verified = 0
    for i in range(messages):
        body = echo_body(i) if i % 2 else f"text message {i}"
        channel.send(body)
        echo = await asyncio.wait_for(received.get(), timeout)
        if echo != body:
            return verified, f"echo {i} differs ({len(echo)} back for {len(body)})"
        verified += 1
    return verified, "ok"


async def run(args) -> int:
    log = open(args.device_log, "w") if args.device_log else sys.stderr
    proc = await asyncio.create_subprocess_exec(
        args.elf, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    device = Device(proc, log)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channels: asyncio.Queue = asyncio.Queue()
    counts = {"decoded": 0}
    frame_tasks = []
    pc.on("datachannel", channels.put_nowait)

    @pc.on("track")
    def on_track(track):
        if track.kind == "video":
            frame_tasks.append(asyncio.ensure_future(count_frames(track, counts)))

    fields = {"example": args.example}
    ok = False
    try:
        offer = await device.offer(args.timeout)
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await device.type_answer(pc.localDescription.sdp)
        channel = await asyncio.wait_for(channels.get(), args.timeout)
        fields["channel"] = channel.label
        if args.example == "datachannel_echo":
            verified, why = await echo_exchange(channel, args.messages, args.timeout)
            fields.update(messages=verified, expected=args.messages, why=why)
            ok = channel.label == "echo" and verified == args.messages
        else:
            for _ in range(int(args.timeout * 10)):
                if counts["decoded"] >= args.frames:
                    break
                await asyncio.sleep(0.1)
            fields.update(frames_decoded=counts["decoded"], expected=args.frames)
            ok = channel.label == "control" and counts["decoded"] >= args.frames
    except Exception as e:  # a timeout or the device going away: name it in the RESULT line
        fields["why"] = f"{type(e).__name__}: {e}".replace(" ", "_")
    finally:
        for task in frame_tasks:
            task.cancel()
        await pc.close()
        await device.stop()
    print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()) + f" ok={int(ok)}", flush=True)
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elf", required=True, help="the example built for the linux target")
    parser.add_argument("--example", choices=["datachannel_echo", "h264_sender"], required=True)
    parser.add_argument("--messages", type=int, default=16, help="echoed messages (datachannel_echo)")
    parser.add_argument("--frames", type=int, default=10, help="decoded frames to wait for (h264_sender)")
    parser.add_argument("--timeout", type=float, default=30, help="seconds for each step")
    parser.add_argument("--device-log", help="file for the device's console (default: stderr)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
