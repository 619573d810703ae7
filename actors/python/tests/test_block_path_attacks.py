"""An outside review of the block host's encode-once reply path, kept as regression tests."""

import json
import os
import struct
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_blockhost import Host  # noqa: E402


class HiddenCycleTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        os.makedirs(os.path.join(self.dir.name, "blocks"))
        self.host = Host(self.dir.name)

    def tearDown(self):
        try:
            self.host.close()
        except Exception:
            pass
        self.dir.cleanup()

    def test_finding1_self_referencing_dict_subclass_is_invalid_result_not_a_crashed_worker(self):
        # A dict subclass whose values() hides its children passes _unreadable's depth bound; an
        # earlier encode-once encoder had no cycle check, so with a raised recursion limit it
        # recursed until the C stack overflowed (SIGSEGV, no reply). The encoder checks cycles
        # and the host puts the recursion limit back after each call.
        with open(os.path.join(self.dir.name, "blocks", "cyc.py"), "w") as f:
            f.write(
                "import sys\n"
                "class D(dict):\n"
                "    def values(self):\n"
                "        return []\n"
                "def run(i, c=None):\n"
                "    sys.setrecursionlimit(10 ** 7)\n"
                "    x = D()\n"
                "    x['a'] = x\n"
                "    return x\n"
            )
        try:
            r = self.host.call("blocks/cyc.py")
        except Exception as exc:  # no frame: the worker died
            self.host.p.wait(5)
            self.fail(f"no reply ({exc!r}); worker exit code {self.host.p.returncode}")
        self.assertEqual((r["ok"], r.get("error_type")), (False, "invalid_result"), r)
        self.assertTrue(self.host.send({"id": 99, "op": "ping"})["ok"])


class ReplySizeTest(unittest.TestCase):
    def test_finding4_reply_frame_fits_the_kernels_read_limit(self):
        # The kernel reads a reply of at most RUMI_MAX_RESULT_BYTES + 64 KiB
        # (pack_container/worker.rs exchange). The host bounds the encoded result (<= the limit)
        # and the log (16 Ki characters), but a log of control characters is escaped six-fold
        # (\u0001) in the frame: ~98 KiB of envelope, and the kernel replaced the sandbox instead
        # of reading a reply. The envelope is now cut to fit (the log halved until it does).
        d = tempfile.TemporaryDirectory()
        try:
            os.makedirs(os.path.join(d.name, "blocks"))
            with open(os.path.join(d.name, "blocks", "big.py"), "w") as f:
                f.write("def run(i, c=None):\n    print('\\x01' * 20000)\n    return 'x' * 990\n")
            host = Host(d.name, env={"RUMI_MAX_RESULT_BYTES": "1000"})
            try:
                body = json.dumps({"id": 1, "op": "call", "file": "blocks/big.py", "input": None, "context": {}}).encode()
                host.p.stdin.write(struct.pack(">I", len(body)) + body)
                host.p.stdin.flush()
                (n,) = struct.unpack(">I", host.p.stdout.read(4))
                host.p.stdout.read(n)
                self.assertLessEqual(n, 1000 + 64 * 1024, "the reply frame is over what the kernel reads")
            finally:
                host.close()
        finally:
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
