"""rumi_npm_install: tarballs unpacked into node_modules; links, escapes and bad plans refused."""

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


if __name__ == "__main__":
    unittest.main()
