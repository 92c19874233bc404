"""A WHEP player made of aiortc and urllib, against examples/whep_camera built for ESP-IDF's
`linux` target (the ESP-IDF end-to-end test's second client beside Chromium).

Usage: whep_client.py --url http://127.0.0.1:PORT [--frames N] [--messages N] [--errors]

Offers recvonly video and a data channel "echo", POSTs the offer to /whep, checks 201 Created,
Content-Type application/sdp and a Location, waits for N decoded H.264 frames and N echoed
messages, then DELETEs the session and checks 200. With --errors it first checks the endpoint's
error answers (415 wrong type, 400 not SDP, 405 GET), while the session runs 503 for a second
offer and 405 for PATCH, and after DELETE 404 for the gone session.
Prints one `RESULT key=value ...` line and exits 0 only when everything matched.
"""

import argparse
import asyncio
import logging
import sys
import urllib.error
import urllib.request

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from aiortc_peer import count_frames  # the lab's interop peer, beside this file

# Loopback only, as the device (its ICE is bound to 127.0.0.1 on the linux target).
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def http(method: str, url: str, body: bytes | None = None, content_type: str | None = None):
    """(status, headers, body) of one request; error statuses are answers too."""
    request = urllib.request.Request(url, data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


async def call(*args, **kwargs):
    return await asyncio.get_running_loop().run_in_executor(None, lambda: http(*args, **kwargs))


async def run(args) -> int:
    endpoint = args.url.rstrip("/") + "/whep"
    fields: dict = {}
    problems = []

    def expect(what: str, got: int, want: int):
        fields[what] = got
        if got != want:
            problems.append(f"{what}:{got}!={want}")

    if args.errors:
        expect("wrong_type", (await call("POST", endpoint, b"v=0\r\n", "text/plain"))[0], 415)
        expect("not_sdp", (await call("POST", endpoint, b"hello", "application/sdp"))[0], 400)
        expect("get_endpoint", (await call("GET", endpoint))[0], 405)

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    channel = pc.createDataChannel("echo")
    counts = {"decoded": 0}
    echoes: asyncio.Queue = asyncio.Queue()
    channel.on("message", echoes.put_nowait)
    frame_task = []

    @pc.on("track")
    def on_track(track):
        if track.kind == "video":
            frame_task.append(asyncio.ensure_future(count_frames(track, counts)))

    ok = False
    try:
        await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers before it returns
        status, headers, body = await call("POST", endpoint, pc.localDescription.sdp.encode(), "application/sdp")
        expect("post", status, 201)
        if status != 201:
            raise RuntimeError(f"POST {status}: {body.decode(errors='replace').strip()}")
        fields["answer_type"] = headers.get("Content-Type")
        location = headers.get("Location") or ""
        fields["location"] = location
        if fields["answer_type"] != "application/sdp" or not location.startswith("/whep/"):
            problems.append("answer_headers")
        session = args.url.rstrip("/") + location
        await pc.setRemoteDescription(RTCSessionDescription(body.decode(), "answer"))
        if args.errors:
            expect("second_offer", (await call("POST", endpoint, pc.localDescription.sdp.encode(), "application/sdp"))[0], 503)
            expect("patch", (await call("PATCH", session, b"", "application/trickle-ice-sdpfrag"))[0], 405)

        opened = asyncio.Event()
        channel.on("open", opened.set)
        if channel.readyState != "open":
            await asyncio.wait_for(opened.wait(), args.timeout)
        verified = 0
        for i in range(args.messages):
            text = f"message {i} " + "x" * (i * 37 % 300)
            channel.send(text)
            echo = await asyncio.wait_for(echoes.get(), args.timeout)
            if echo != text:
                problems.append(f"echo_{i}_differs")
                break
            verified += 1
        fields["echoes"] = verified
        for _ in range(int(args.timeout * 10)):
            if counts["decoded"] >= args.frames:
                break
            await asyncio.sleep(0.1)
        fields["frames_decoded"] = counts["decoded"]
        expect("delete", (await call("DELETE", session))[0], 200)
        if args.errors:
            expect("delete_again", (await call("DELETE", session))[0], 404)
        ok = not problems and verified == args.messages and counts["decoded"] >= args.frames
    except Exception as e:  # a timeout or the device going away: name it in the RESULT line
        fields["why"] = f"{type(e).__name__}: {e}".replace(" ", "_")
    finally:
        for task in frame_task:
            task.cancel()
        await pc.close()
    if problems:
        fields["problems"] = ",".join(problems)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()) + f" ok={int(ok)}", flush=True)
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the device, e.g. http://127.0.0.1:8080")
    parser.add_argument("--frames", type=int, default=10, help="decoded frames to wait for")
    parser.add_argument("--messages", type=int, default=8, help="echoed messages")
    parser.add_argument("--timeout", type=float, default=30, help="seconds for each step")
    parser.add_argument("--errors", action="store_true", help="also check the endpoint's error statuses")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
