"""rumi_npm_install: tarballs unpacked into node_modules; links, escapes and bad plans refused."""

import gzip
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), "rumi_npm_install.py")


def tgz(path, entries):
    """entries: (name, text) for files, (name, None, linkname) for symlinks."""
    with tarfile.open(path, "w:gz") as t:
        for e in entries:
            info = tarfile.TarInfo(e[0])
            if len(e) == 3:
                info.type = tarfile.SYMTYPE
                info.linkname = e[2]
                t.addfile(info)
            else:
                data = e[1].encode()
                info.size = len(data)
                info.mode = 0o644
                t.addfile(info, io.BytesIO(data))


class NpmInstall(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.input = os.path.join(self.tmp.name, "in")
        self.target = os.path.join(self.tmp.name, "out")
        os.makedirs(self.input)
        os.makedirs(self.target)

    def tearDown(self):
        self.tmp.cleanup()

    def run_it(self, plan):
        with open(os.path.join(self.input, "plan.json"), "w") as f:
            json.dump(plan, f)
        return subprocess.run([sys.executable, "-I", "-S", "-B", SCRIPT, self.input, self.target],
                              capture_output=True, text=True)

    def test_unpacks_scoped_and_plain_packages(self):
        tgz(os.path.join(self.input, "a-1.0.0.tgz"),
            [("package/package.json", '{"name":"a","version":"1.0.0"}'), ("package/lib/i.js", "x")])
        tgz(os.path.join(self.input, "s-b-2.0.0.tgz"),
            [("package/package.json", '{"name":"@s/b","version":"2.0.0"}')])
        r = self.run_it([{"file": "a-1.0.0.tgz", "name": "a"}, {"file": "s-b-2.0.0.tgz", "name": "@s/b"}])
        self.assertEqual(r.returncode, 0, r.stderr)
        got = json.loads(r.stdout)["installed"]
        self.assertEqual(got, [{"name": "a", "version": "1.0.0"}, {"name": "@s/b", "version": "2.0.0"}])
        self.assertTrue(os.path.isfile(os.path.join(self.target, "node_modules/a/lib/i.js")))
        self.assertTrue(os.path.isfile(os.path.join(self.target, "node_modules/@s/b/package.json")))
        mode = os.stat(os.path.join(self.target, "node_modules/a/lib/i.js")).st_mode & 0o777
        self.assertEqual(mode, 0o644)

    def test_hostile_tarballs_are_refused(self):
        cases = [
            ([("package/x", None, "/etc/passwd")], "not a regular file"),
            ([("package/../../escape.js", "x")], "escapes"),
            ([("/abs/x.js", "x")], "absolute"),
            ([("package/a.js", "x"), ("other/b.js", "y")], "more than one top-level"),
        ]
        for entries, says in cases:
            with self.subTest(says=says):
                for f in os.listdir(self.input):
                    os.remove(os.path.join(self.input, f))
                tgz(os.path.join(self.input, "a-1.0.0.tgz"), entries)
                r = self.run_it([{"file": "a-1.0.0.tgz", "name": "a"}])
                self.assertEqual(r.returncode, 2, r.stdout)
                self.assertIn(says, r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp.name, "escape.js")))

    def test_bad_plans_are_refused(self):
        tgz(os.path.join(self.input, "a-1.0.0.tgz"), [("package/package.json", "{}")])
        for plan, says in [
            ([{"file": "a-1.0.0.tgz", "name": "../a"}], "not a package name"),
            ([{"file": "../a-1.0.0.tgz", "name": "a"}], "not a tarball name"),
            ([{"file": "a-1.0.0.tgz", "name": "a"}] * 2, "planned twice"),
        ]:
            with self.subTest(says=says):
                r = self.run_it(plan)
                self.assertEqual(r.returncode, 2)
                self.assertIn(says, r.stderr)

    def test_long_names_within_the_cap_unpack(self):
        deep = "package/" + "/".join(["d" * 60] * 3) + "/f.js"  # > 100 bytes: a long-name record
        for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
            with self.subTest(fmt=fmt):
                self.tearDown()
                self.setUp()
                with tarfile.open(os.path.join(self.input, "a-1.0.0.tgz"), "w:gz", format=fmt) as t:
                    for name, text in [("package/package.json", '{"name":"a","version":"1.0.0"}'),
                                       (deep, "x")]:
                        info = tarfile.TarInfo(name)
                        info.size = len(text)
                        t.addfile(info, io.BytesIO(text.encode()))
                r = self.run_it([{"file": "a-1.0.0.tgz", "name": "a"}])
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertTrue(os.path.isfile(os.path.join(self.target, "node_modules/a", deep[8:])))

    def write_records(self, records):
        """A .tgz of package.json, then (typeflag, declared size, data) records, then a file."""
        with gzip.open(os.path.join(self.input, "a-1.0.0.tgz"), "wb") as gz:
            meta = b'{"name":"a","version":"1.0.0"}'
            ti = tarfile.TarInfo("package/package.json")
            ti.size = len(meta)
            gz.write(ti.tobuf(format=tarfile.USTAR_FORMAT) + meta + b"\0" * (512 - len(meta)))
            for kind, size, data in records:
                ti = tarfile.TarInfo("././@LongLink")
                ti.type = kind
                ti.size = size
                gz.write(ti.tobuf(format=tarfile.GNU_FORMAT))
                gz.write(data + b"\0" * (-len(data) % 512))
            ti = tarfile.TarInfo("package/index.js")
            ti.size = 1
            gz.write(ti.tobuf(format=tarfile.USTAR_FORMAT) + b"x" + b"\0" * 511 + b"\0" * 1024)

    def test_oversized_and_misleading_metadata_records_are_refused(self):
        big = 80 * 1024
        cases = [
            ([(tarfile.GNUTYPE_LONGNAME, big, b"n" * big)], "GNU long-name record of 81920 bytes"),
            ([(tarfile.GNUTYPE_LONGLINK, big, b"n" * big)], "GNU long-link record"),
            ([(tarfile.XHDTYPE, big, b"n" * big)], "pax record of 81920 bytes"),
            ([(tarfile.XGLTYPE, big, b"n" * big)], "global pax record"),
            ([(tarfile.XHDTYPE, 12, b"12 size=999\n")], "sets 'size'"),
            ([(tarfile.XHDTYPE, 9, b"99 a=b\n\0\0")], "damaged pax record"),
            ([(tarfile.GNUTYPE_LONGNAME, 1 << 30, b"")], "1073741824 bytes"),
        ]
        for records, says in cases:
            with self.subTest(says=says):
                self.write_records(records)
                r = self.run_it([{"file": "a-1.0.0.tgz", "name": "a"}])
                self.assertEqual(r.returncode, 2, r.stdout)
                self.assertTrue(r.stderr.startswith("refused: a-1.0.0.tgz"), r.stderr)
                self.assertIn(says, r.stderr)
                self.assertNotIn("Traceback", r.stderr)
                self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)

    def test_the_decompressed_stream_is_capped(self):
        spec = importlib.util.spec_from_file_location("rumi_npm_install_under_test", SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        tgz(os.path.join(self.input, "a-1.0.0.tgz"),
            [("package/package.json", '{"name":"a","version":"1.0.0"}'), ("package/big.js", "z" * 300_000)])
        with open(os.path.join(self.input, "plan.json"), "w") as f:
            json.dump([{"file": "a-1.0.0.tgz", "name": "a"}], f)
        mod.MAX_STREAM_BYTES = 200_000
        with self.assertRaisesRegex(mod.Refused, "decompress to more than 200000 bytes"):
            mod.install(self.input, self.target)
        self.assertFalse(os.path.exists(os.path.join(self.target, "node_modules/a/big.js")))


if __name__ == "__main__":
    unittest.main()
