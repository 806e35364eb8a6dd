#!/usr/bin/python3
# Unit tests of the dnf4 plugin's pure helpers (run with Debian's python3, which has dnf):
#   /usr/bin/python3 -m unittest tests/dnf/test_plugin.py
import importlib.util
import os
import unittest

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "snapback_plugin", os.path.join(here, "..", "..", "dnf-plugin", "snapback.py")
)
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)


class CapList(unittest.TestCase):
    def test_short_list_is_kept_whole(self):
        self.assertEqual(plugin.cap_list(["a-1", "b-2"]), "a-1 b-2")

    def test_long_list_is_cut_with_a_count_of_the_rest(self):
        names = ["pkg%03d-1.0-1.x86_64" % i for i in range(100)]
        text = plugin.cap_list(names)
        self.assertTrue(text.endswith(" (+60 more)"), text)
        self.assertEqual(text.split(" (+")[0].split(), names[:40])

    def test_character_cap(self):
        names = ["x" * 600, "y" * 600, "z" * 600]
        self.assertEqual(plugin.cap_list(names), "x" * 600 + " " + "y" * 600 + " (+1 more)")


class Important(unittest.TestCase):
    def test_default_patterns(self):
        patterns = plugin.split_words(plugin.DEFAULT_IMPORTANT)
        names = ["kernel-core", "kernel", "glibc", "systemd", "systemd-boot-unsigned", "dracut",
                 "grub2-efi-x64", "shim-x64", "bash", "kernelshark", "glibc-devel", "vim"]
        self.assertEqual(
            plugin.important_matches(names, patterns),
            ["dracut", "glibc", "grub2-efi-x64", "kernel", "kernel-core", "shim-x64", "systemd",
             "systemd-boot-unsigned"],
        )


class Summarize(unittest.TestCase):
    def test_groups_counts_and_names(self):
        items = [
            ("upgrade", "kernel-core", "kernel-core-6.1-2.x86_64"),
            ("install", "vim", "vim-9.0-1.x86_64"),
            ("upgrade", "bash", "bash-5.2-3.x86_64"),
            ("remove", "nano", "nano-7.2-1.x86_64"),
        ]
        userdata, names = plugin.summarize(items)
        self.assertEqual(
            userdata,
            {
                "dnf.install.count": "1",
                "dnf.install": "vim-9.0-1.x86_64",
                "dnf.upgrade.count": "2",
                "dnf.upgrade": "bash-5.2-3.x86_64 kernel-core-6.1-2.x86_64",
                "dnf.remove.count": "1",
                "dnf.remove": "nano-7.2-1.x86_64",
            },
        )
        self.assertEqual(sorted(names), ["bash", "kernel-core", "nano", "vim"])


class DbusMessage(unittest.TestCase):
    def test_dbus_error_names_itself(self):
        import dbus

        e = dbus.DBusException("pool full", name="org.snapback.Snapback1.Error.NoSpace")
        self.assertEqual(plugin._dbus_message(e), "org.snapback.Snapback1.Error.NoSpace: pool full")

    def test_other_errors_are_their_text(self):
        self.assertEqual(plugin._dbus_message(RuntimeError("boom")), "boom")
        self.assertEqual(plugin._dbus_message(RuntimeError()), "RuntimeError")


if __name__ == "__main__":
    unittest.main()
