"""rumi_wheel_install: wheels unpacked into a target, hostile wheels refused before any write."""

import json
import os
import stat
import subprocess
import sys
import tempfile
import unittest
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), "rumi_wheel_install.py")


def wheel(dir, name, version, entries, links=()):
    path = os.path.join(dir, f"{name}-{version}-py3-none-any.whl")
    di = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        for arc, text in entries:
            z.writestr(zipfile.ZipInfo(arc), text)
        for arc, target in links:
            info = zipfile.ZipInfo(arc)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
        z.writestr(f"{di}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{di}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{di}/RECORD", "")
    return path


class WheelInstall(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.wheels = os.path.join(self.tmp.name, "wheels")
        self.target = os.path.join(self.tmp.name, "out", "target")
        os.makedirs(self.wheels)
        os.makedirs(self.target)

    def tearDown(self):
        self.tmp.cleanup()

    def run_installer(self):
        p = subprocess.run([sys.executable, "-I", "-S", "-B", SCRIPT, self.wheels, self.target],
                           capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    def all_files(self):
        out = []
        for root, _dirs, files in os.walk(self.tmp.name):
            out.extend(os.path.join(root, f) for f in files)
        return out

    def test_purelib_and_data_purelib_are_installed_with_record_and_installer(self):
        wheel(self.wheels, "good", "1.0", [("good/__init__.py", "X = 1\n"),
                                           ("good-1.0.data/purelib/extra_mod.py", "Y = 2\n"),
                                           ("good-1.0.data/scripts/tool", "#!/bin/sh\n")])
        code, out, err = self.run_installer()
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out), {"installed": [{"name": "good", "version": "1.0"}]})
        self.assertTrue(os.path.isfile(os.path.join(self.target, "good", "__init__.py")))
        self.assertTrue(os.path.isfile(os.path.join(self.target, "extra_mod.py")))
        self.assertFalse(os.path.exists(os.path.join(self.target, "tool")))
        with open(os.path.join(self.target, "good-1.0.dist-info", "RECORD")) as f:
            record = f.read()
        self.assertIn("good/__init__.py,sha256=", record)
        with open(os.path.join(self.target, "good-1.0.dist-info", "INSTALLER")) as f:
            self.assertEqual(f.read(), "rumi\n")

    def refused(self, *entries, links=()):
        before = set(self.all_files())
        wheel(self.wheels, "ok", "1.0", [("ok/__init__.py", "")])
        wheel(self.wheels, "evil", "1.0", [("evil/__init__.py", "")] + list(entries), links)
        code, out, err = self.run_installer()
        self.assertEqual(code, 2, out)
        self.assertIn("refused", err)
        written = set(self.all_files()) - before - {os.path.join(self.wheels, n) for n in os.listdir(self.wheels)}
        self.assertEqual(written, set(), "nothing is written, not even the good wheel")
        return err

    def test_parent_paths_are_refused(self):
        self.assertIn("escapes", self.refused(("../../x.py", "")))
        self.assertIn("escapes", self.refused(("evil-1.0.data/purelib/../../../y.py", "")))

    def test_absolute_paths_are_refused(self):
        self.assertIn("absolute", self.refused(("/tmp/rumi_wheel_abs.py", "")))

    def test_backslashes_are_refused(self):
        self.assertIn("backslash", self.refused(("..\\..\\x.py", "")))

    def test_symlink_entries_are_refused(self):
        self.assertIn("not a regular file", self.refused(links=[("evil/link", "/etc/passwd")]))

    def test_a_path_shipped_twice_is_refused(self):
        wheel(self.wheels, "a", "1.0", [("shared/m.py", "")])
        wheel(self.wheels, "b", "1.0", [("shared/m.py", "")])
        code, _out, err = self.run_installer()
        self.assertEqual(code, 2)
        self.assertIn("shipped twice", err)

    def test_an_sdist_in_the_download_is_refused(self):
        open(os.path.join(self.wheels, "pkg-1.0.tar.gz"), "wb").close()
        code, _out, err = self.run_installer()
        self.assertEqual(code, 2)
        self.assertIn("not wheels", err)


if __name__ == "__main__":
    unittest.main()
