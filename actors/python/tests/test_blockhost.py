"""Tests of the block host through a real subprocess speaking the framed protocol."""

import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = os.path.join(os.path.dirname(HERE), "rumi_blockhost.py")


class Host:
    def __init__(self, root, env=None):
        e = {"PATH": "/usr/bin:/bin"}
        e.update(env or {})
        self.p = subprocess.Popen([sys.executable, "-B", "-I", "-S", HOST, root], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
        self.n = 0

    def send(self, msg):
        body = json.dumps(msg).encode()
        self.p.stdin.write(struct.pack(">I", len(body)) + body)
        self.p.stdin.flush()
        header = self.p.stdout.read(4)
        (n,) = struct.unpack(">I", header)
        return json.loads(self.p.stdout.read(n))

    def call(self, file, inp=None, ctx=None):
        self.n += 1
        return self.send({"id": self.n, "op": "call", "file": file, "input": inp, "context": ctx or {}})

    def close(self):
        self.p.stdin.close()
        self.p.wait(5)
        self.p.stdout.close()
        self.p.stderr.close()


class BlockHostTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.root = self.dir.name
        os.makedirs(os.path.join(self.root, "blocks"))
        self.host = Host(self.root)

    def tearDown(self):
        self.host.close()
        self.dir.cleanup()

    def write(self, name, code):
        with open(os.path.join(self.root, "blocks", name), "w") as f:
            f.write(textwrap.dedent(code))

    def test_two_and_one_argument_forms(self):
        self.write("two.py", "def run(input_data, context=None):\n    return {'n': input_data['n'] + 1, 'flow': context['flow_id']}\n")
        self.write("one.py", "def run(input_data):\n    return [input_data]\n")
        r = self.host.call("blocks/two.py", {"n": 1}, {"flow_id": "f"})
        self.assertEqual(r, {"id": 1, "ok": True, "result": {"n": 2, "flow": "f"}, "log": ""})
        self.assertEqual(self.host.call("blocks/one.py", 5)["result"], [5])

    def test_prints_go_to_log_not_result_nor_protocol(self):
        self.write("p.py", "import os, sys\ndef run(i, c=None):\n    print('hello')\n    sys.stderr.write('err\\n')\n    os.write(1, b'raw fd write')\n    return {'ok': 1}\n")
        r = self.host.call("blocks/p.py")
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["result"], {"ok": 1})
        self.assertIn("hello", r["log"])
        self.assertIn("err", r["log"])
        # The protocol survived the raw write to fd 1.
        self.assertTrue(self.host.send({"id": 9, "op": "ping"})["ok"])

    def test_exceptions_and_bad_results(self):
        self.write("e.py", "def run(i, c=None):\n    raise ValueError('bad input')\n")
        self.write("x.py", "def run(i, c=None):\n    raise SystemExit(3)\n")
        self.write("n.py", "def run(i, c=None):\n    return {'s': {1, 2}}\n")
        self.write("nan.py", "def run(i, c=None):\n    return float('nan')\n")
        self.write("norun.py", "x = 1\n")
        r = self.host.call("blocks/e.py")
        self.assertEqual((r["ok"], r["error_type"], r["error"]), (False, "block_error", "ValueError: bad input"))
        self.assertNotIn(self.root, r["log"])
        self.assertNotIn(os.path.dirname(HOST), r["log"])
        self.assertIn("blocks/e.py", r["log"])
        self.assertEqual(self.host.call("blocks/x.py")["error_type"], "block_error")
        self.assertEqual(self.host.call("blocks/n.py")["error_type"], "invalid_result")
        self.assertEqual(self.host.call("blocks/nan.py")["error_type"], "invalid_result")
        self.assertIn("no run", self.host.call("blocks/norun.py")["error"])

    def test_stdin_is_not_the_protocol(self):
        self.write("r.py", "import sys\ndef run(i, c=None):\n    return {'read': sys.stdin.read()}\n")
        self.assertEqual(self.host.call("blocks/r.py")["result"], {"read": ""})
        self.assertTrue(self.host.send({"id": 2, "op": "ping"})["ok"])

    def test_edited_block_is_reloaded(self):
        self.write("v.py", "def run(i, c=None):\n    return 1\n")
        self.assertEqual(self.host.call("blocks/v.py")["result"], 1)
        self.write("v.py", "def run(i, c=None):\n    return 22\n")
        self.assertEqual(self.host.call("blocks/v.py")["result"], 22)

    def test_context_network_without_egress_never_claims_access(self):
        self.write("n.py", "def run(i, c):\n    return {'check': c['network_check']('example.com', 443), 'req': c['http_request']('GET', 'https://example.com')}\n")
        r = self.host.call("blocks/n.py")["result"]
        self.assertFalse(r["check"]["allowed"])
        self.assertIn("egress not available", r["check"]["reason"])
        self.assertFalse(r["req"]["success"])
        self.assertEqual(r["req"]["error_type"], "egress_unavailable")

    def test_syscall_and_capability_modules_importable(self):
        self.write("m.py", "import rumi_syscall, rumi_capability\ndef run(i, c=None):\n    return {'get': rumi_syscall.get('https://x')['error_type'], 'cap': rumi_capability.call('store.get', {})['error_type']}\n")
        self.assertEqual(self.host.call("blocks/m.py")["result"], {"get": "egress_unavailable", "cap": "capability_unavailable"})

    def test_pack_files_cannot_shadow_kernel_modules(self):
        with open(os.path.join(self.root, "rumi_syscall.py"), "w") as f:
            f.write("SHADOW = True\n")
        with open(os.path.join(self.root, "helper.py"), "w") as f:
            f.write("VALUE = 7\n")
        self.write("s.py", "import rumi_syscall, helper\ndef run(i, c=None):\n    return {'shadowed': hasattr(rumi_syscall, 'SHADOW'), 'helper': helper.VALUE}\n")
        self.assertEqual(self.host.call("blocks/s.py")["result"], {"shadowed": False, "helper": 7})

    def test_results_the_kernel_cannot_read_are_refused_and_the_host_goes_on(self):
        # Attack: a result nested past the kernel parser's limit (128), which used to read as a
        # broken reply and cost the pack its worker; a self-containing list; a huge integer.
        self.write("deep.py", "def run(i, c=None):\n    v = 0\n    for _ in range(i):\n        v = [v]\n    return v\n")
        self.write("loop.py", "def run(i, c=None):\n    v = []\n    v.append(v)\n    return {'v': v}\n")
        self.write("big.py", "def run(i, c=None):\n    return {'n': 10 ** 400}\n")
        self.assertTrue(self.host.call("blocks/deep.py", 100)["ok"])
        for file, inp, want in [("deep.py", 101, "nested deeper than 100"), ("deep.py", 5000, "nested deeper than 100"), ("loop.py", None, "nested deeper"), ("big.py", None, "308 digits")]:
            r = self.host.call("blocks/" + file, inp)
            self.assertEqual((r["ok"], r["error_type"]), (False, "invalid_result"), r)
            self.assertIn(want, r["error"])
        self.assertTrue(self.host.send({"id": 99, "op": "ping"})["ok"])

    def test_processes_left_running_are_killed_and_reaped_after_the_call(self):
        # Attack: a block leaves a forked child and a child in its own session running. (The
        # kernel also makes the host their subreaper, for double forks; not here.)
        self.write("leave.py", """
            import os, subprocess, time
            def run(i, c=None):
                detached = subprocess.Popen(["sleep", "60"], start_new_session=True)
                child = os.fork()
                if child == 0:
                    time.sleep(60)
                    os._exit(0)
                return [detached.pid, child]
            """)
        r = self.host.call("blocks/leave.py")
        self.assertTrue(r["ok"], r)
        self.assertIn("killed 2 process(es)", r["log"])
        # Reaped before the answer: not even a zombie is left.
        self.assertEqual([p for p in r["result"] if os.path.exists(f"/proc/{p}")], [])
        self.write("quiet.py", "def run(i, c=None):\n    return 1\n")
        self.assertEqual(self.host.call("blocks/quiet.py")["log"], "")

    def test_log_is_bounded(self):
        self.write("big.py", "def run(i, c=None):\n    print('x' * 100000)\n    return 1\n")
        r = self.host.call("blocks/big.py")
        self.assertLess(len(r["log"]), 17000)
        self.assertIn("[log truncated]", r["log"])


class WireTest(unittest.TestCase):
    """rumi_syscall and rumi_capability against a real Unix socket speaking the kernel's framing."""

    def setUp(self):
        import socket
        import threading

        sys.path.insert(0, os.path.dirname(HOST))
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "s.sock")
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(4)
        self.seen = []

        def serve():
            while True:
                try:
                    conn, _ = self.server.accept()
                except OSError:
                    return
                with conn:
                    (n,) = struct.unpack(">I", conn.recv(4, socket.MSG_WAITALL))
                    req = json.loads(conn.recv(n, socket.MSG_WAITALL))
                    self.seen.append(req)
                    if req.get("op") == "network_check":
                        reply = {"allowed": True, "reason": "granted"}
                    elif req.get("url", "").endswith("/bin"):
                        reply = {"success": True, "status_code": 200, "body": "AAH/", "headers": {"x-proxy-body-encoding": "base64"}, "bytes_read": 3}
                    elif req.get("url", "").endswith("/big"):
                        reply = {"success": True, "status_code": 200, "body": "", "headers": {}, "bytes_read": 1 << 40}
                    else:
                        reply = {"success": True, "status_code": 200, "body": "hi", "echo": req}
                    body = json.dumps(reply).encode()
                    conn.sendall(struct.pack(">I", len(body)) + body)

        threading.Thread(target=serve, daemon=True).start()

    def tearDown(self):
        self.server.close()
        self.dir.cleanup()
        os.environ.pop("RUMI_EGRESS_SOCKET", None)
        os.environ.pop("RUMI_CAPABILITY_SOCKET", None)

    def test_requests_are_framed_and_answers_decoded(self):
        import rumi_capability
        import rumi_syscall

        os.environ["RUMI_EGRESS_SOCKET"] = self.path
        os.environ["RUMI_CAPABILITY_SOCKET"] = self.path
        r = rumi_syscall.post_json("https://example.com/x", {"a": 1}, timeout_seconds=5)
        self.assertTrue(r["success"])
        sent = self.seen[-1]
        self.assertEqual((sent["method"], sent["url"], json.loads(sent["body"])), ("POST", "https://example.com/x", {"a": 1}))
        self.assertEqual(sent["headers"]["Content-Type"], "application/json")
        self.assertEqual(rumi_syscall.network_check("example.com", 443), {"allowed": True, "reason": "granted"})
        r = rumi_syscall.post("https://example.com/upload", b"\x00\xff")
        sent = self.seen[-1]
        self.assertEqual(sent["headers"]["X-Proxy-Body-Encoding"], "base64")
        self.assertEqual(sent["body"], "AP8=")
        r = rumi_syscall.get("https://example.com/bin")
        self.assertEqual(rumi_syscall.body_bytes(r), b"\x00\x01\xff")
        self.assertEqual(rumi_syscall.body_bytes({"body": "h\u00e9", "headers": {}}), "hé".encode())
        big = rumi_syscall.get("https://example.com/big")
        self.assertEqual((big["success"], big["error_type"]), (False, "response_too_large"))
        c = rumi_capability.call("store.get", {"store_id": "s", "key": "k"}, request_id="r1")
        self.assertEqual(c["echo"]["permission_id"], "store.get")
        self.assertEqual(c["echo"]["request_id"], "r1")


class FramingTest(unittest.TestCase):
    """The block host's fast paths give what the general ones give."""

    def setUp(self):
        sys.path.insert(0, os.path.dirname(HOST))

    def test_decode_is_json_loads(self):
        import rumi_wire

        texts = ['{"a":1}', ' {"a":[1,2.5,"\\u00e9"]} ', "[]", '"x"', "1e999", "NaN", '{"a":1}x', "", "nan", "[1,", '{"a":"\\ud800"}', "{} {}"]
        for text in texts:
            try:
                want = ("ok", json.loads(text))
            except ValueError as e:
                want = ("error", type(e))
            try:
                got = ("ok", rumi_wire.decode(text))
            except ValueError as e:
                got = ("error", type(e))
            # NaN != NaN: compare the encodings.
            self.assertEqual(repr(got), repr(want), text)

    def test_frames_read_from_short_reads_and_a_stream_that_ends(self):
        import io

        import rumi_wire

        class Trickle(io.RawIOBase):
            """An unbuffered stream that hands out one byte per read."""

            def __init__(self, data):
                self.data = data

            def readable(self):
                return True

            def read(self, n=-1):
                out, self.data = self.data[:1], self.data[1:]
                return out

        body = json.dumps({"op": "call", "id": 7}).encode()
        frame = struct.pack(">I", len(body)) + body
        stream = Trickle(frame + frame[:6])
        self.assertEqual(rumi_wire.read_frame(stream, 1 << 20), {"op": "call", "id": 7})
        self.assertIsNone(rumi_wire.read_frame(stream, 1 << 20))  # the second frame is cut short
        buffered = io.BufferedReader(io.BytesIO(frame * 2 + b"\0\0"))
        self.assertEqual(rumi_wire.read_frame(buffered, 1 << 20)["id"], 7)
        self.assertEqual(rumi_wire.read_frame(buffered, 1 << 20)["id"], 7)
        self.assertIsNone(rumi_wire.read_frame(buffered, 1 << 20))
        with self.assertRaises(ValueError):
            rumi_wire.read_frame(io.BytesIO(frame), len(body) - 1)

    def test_the_common_reply_is_the_general_encoding(self):
        import rumi_blockhost
        import rumi_wire

        for reply in (
            {"ok": True, rumi_blockhost.RESULT_BYTES: b'{"m":"\xc3\xa9"}', "log": "", "id": 12},
            {"ok": True, rumi_blockhost.RESULT_BYTES: b"[]", "log": "printed\n", "id": 3},
            {"ok": True, rumi_blockhost.RESULT_BYTES: b"1", "log": "", "id": None},
            {"ok": True, rumi_blockhost.RESULT_BYTES: b"1", "log": "", "id": True},
            {"ok": True, rumi_blockhost.RESULT_BYTES: b"1", "log": "", "id": 4, "strays": 1},
        ):
            general = dict(reply)
            encoded = general.pop(rumi_blockhost.RESULT_BYTES)
            rest = rumi_wire.encode_strict(general).encode()
            want = b'{"result":' + encoded + b"," + rest[1:]
            self.assertEqual(rumi_blockhost.reply_body(dict(reply)), want)
            self.assertEqual(json.loads(want)["ok"], True)


class ConnectModeTest(unittest.TestCase):
    """--connect: the container's mode. The host connects to the kernel's socket; a child forked
    by a block loses the channel, so it can never answer in the host's name."""

    def test_socket_channel_and_forked_children(self):
        import socket

        with tempfile.TemporaryDirectory() as d:
            root = os.path.join(d, "pack")
            os.makedirs(os.path.join(root, "blocks"))
            with open(os.path.join(root, "blocks", "forker.py"), "w") as f:
                f.write(textwrap.dedent("""
                    import os, time
                    def run(input_data, context=None):
                        pid = os.fork()
                        if pid == 0:
                            time.sleep(0.3)
                            return {"from": "child"}
                        os.waitpid(pid, 0)
                        return {"from": "parent"}
                """))
            path = os.path.join(d, "host.sock")
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(path)
            server.listen(1)
            p = subprocess.Popen([sys.executable, "-B", "-I", "-S", HOST, "--connect", path, root], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
            try:
                server.settimeout(10)
                conn, _ = server.accept()
                conn.settimeout(10)

                def exchange(msg):
                    body = json.dumps(msg).encode()
                    conn.sendall(struct.pack(">I", len(body)) + body)
                    (n,) = struct.unpack(">I", conn.recv(4, socket.MSG_WAITALL))
                    return json.loads(conn.recv(n, socket.MSG_WAITALL))

                self.assertTrue(exchange({"id": 1, "op": "ping"})["ok"])
                reply = exchange({"id": 2, "op": "call", "file": "blocks/forker.py", "input": None, "context": {}})
                self.assertEqual(reply["result"], {"from": "parent"}, reply)
                self.assertEqual(reply["id"], 2)
                # Nothing else arrives: the child returned into the host and exited silently.
                conn.settimeout(0.5)
                with self.assertRaises(socket.timeout):
                    conn.recv(1)
                conn.settimeout(10)
                self.assertEqual(exchange({"id": 3, "op": "ping"})["id"], 3)
                conn.close()
                self.assertEqual(p.wait(5), 0, "EOF on the channel ends the host")
            finally:
                if p.poll() is None:
                    p.kill()
                p.stderr.close()
                server.close()


if __name__ == "__main__":
    unittest.main()
