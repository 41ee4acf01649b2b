"""The SD-card image (image/, docs/image.md), checked on the built result.

A session fixture builds the CI image once (``image/build --ci``) into
``image/build-cache/ci`` and reuses it while the inputs (image/, kiosk/,
plugins/, pyproject.toml) hash the same.  Building needs root, mmdebstrap,
qemu-user-static with binfmt_misc, mtools, dosfstools and e2fsprogs, and takes
minutes, so these tests run only with ``KIOSK_IMAGE_TESTS=1``; the boot test
also needs qemu-system-aarch64 (``qemu-system-arm``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

IMAGE = ROOT / "image"
CACHE = Path(os.environ.get("KIOSK_IMAGE_CACHE") or IMAGE / "build-cache") / "ci"
# what the image is built from (image/flash and the build caches are not)
INPUTS = ("image/build", "image/config.sh", "image/lib.sh", "image/requirements.lock", "image/stages",
          "image/filesystem", "image/firstboot", "image/boot", "kiosk", "plugins", "pyproject.toml")

pytestmark = [
    pytest.mark.skipif(not os.environ.get("KIOSK_IMAGE_TESTS"),
                       reason="image tests build an SD image (minutes, root): set KIOSK_IMAGE_TESTS=1"),
    pytest.mark.timeout(2400),
]


def inputs_hash() -> str:
    digest = hashlib.sha256()
    for name in INPUTS:
        base = ROOT / name
        files = [base] if base.is_file() else []
        for folder, subfolders, names in os.walk(base):
            subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
            files += [Path(folder) / n for n in sorted(names) if not n.endswith(".pyc")]
        for path in files:
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def say(request, text: str) -> None:
    """A figure for the CI log (build time, boot time), past pytest's capture."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n{text}", flush=True)


class Built:
    def __init__(self, out: Path):
        self.out = out
        self.img = Path((out / "IMAGE").read_text().strip())
        self.root = out / "work" / "rootfs"
        self.build_seconds = float((out / "build-seconds").read_text())

    def partitions(self) -> list[dict]:
        table = json.loads(subprocess.run(["sfdisk", "--json", str(self.img)], check=True,
                                          capture_output=True, text=True).stdout)["partitiontable"]
        return table["partitions"]

    def offset(self, number: int) -> int:
        return self.partitions()[number - 1]["start"] * 512


@pytest.fixture(scope="session")
def built(request) -> Built:
    if os.geteuid() != 0:
        pytest.skip("building the image needs root")
    for tool in ("mmdebstrap", "sfdisk", "mcopy", "mkfs.ext4", "debugfs"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} missing: apt-get install mmdebstrap qemu-user-static binfmt-support "
                        "mtools dosfstools e2fsprogs fdisk")
    wanted = inputs_hash()
    stamp = CACHE / "inputs.sha256"
    if not (stamp.exists() and stamp.read_text() == wanted and (CACHE / "IMAGE").exists()
            and (CACHE / "build-seconds").exists()):
        stamp.unlink(missing_ok=True)
        started = time.monotonic()
        log = CACHE / "build.log"
        CACHE.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as handle:
            result = subprocess.run([str(IMAGE / "build"), "--ci", "--out", str(CACHE)],
                                    stdout=handle, stderr=subprocess.STDOUT)
        if result.returncode:
            pytest.fail(f"image/build --ci failed ({result.returncode}):\n" +
                        "\n".join(log.read_text().splitlines()[-40:]))
        (CACHE / "build-seconds").write_text(f"{time.monotonic() - started:.0f}")
        stamp.write_text(wanted)
    image = Built(CACHE)
    say(request, f"\nCI image {image.img.name}: built in {image.build_seconds:.0f} s "
                 f"({image.build_seconds / 60:.1f} min), {image.img.stat().st_size / 2**20:.0f} MiB "
                 f"({image.img.stat().st_blocks * 512 / 2**20:.0f} MiB allocated)")
    return image


@pytest.fixture(scope="session")
def root_part(built, tmp_path_factory) -> Path:
    """The root partition, cut out of the image, for debugfs."""
    part = built.partitions()[1]
    path = tmp_path_factory.mktemp("rootpart") / "root.ext4"
    subprocess.run(["dd", f"if={built.img}", f"of={path}", "bs=4M", f"skip={part['start'] * 512}",
                    f"count={part['size'] * 512}", "iflag=skip_bytes,count_bytes", "conv=sparse",
                    "status=none"], check=True)
    return path


def debugfs(part: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(part)], check=True, capture_output=True,
                          text=True).stdout


def probe(img: Path, offset: int) -> dict:
    out = subprocess.run(["blkid", "--probe", "--offset", str(offset), "-o", "export", str(img)],
                         check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


class Chroot:
    """Run commands inside the arm64 root under qemu-user (binfmt_misc)."""

    def __init__(self, root: Path):
        self.root = root
        self.mounted: list[Path] = []

    def __enter__(self):
        for name, args in (("proc", ["-t", "proc", "proc"]), ("dev", ["--bind", "/dev"])):
            target = self.root / name
            if not os.path.ismount(target):
                subprocess.run(["mount", *args, str(target)], check=True)
                self.mounted.append(target)
        return self

    def __exit__(self, *exc):
        for target in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(target)])

    def run(self, *cmd, check=False, env=None) -> subprocess.CompletedProcess:
        base = {"PATH": "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
        full = ["chroot", str(self.root), "/usr/bin/env", "-i",
                *(f"{k}={v}" for k, v in {**base, **(env or {})}.items()), *cmd]
        return subprocess.run(full, capture_output=True, text=True, check=check, timeout=900)


@pytest.fixture
def scratch(built):
    """A throw-away folder inside the built root (removed afterwards)."""
    path = built.root / "tmp" / f"test-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path)


# -- the image file ----------------------------------------------------------------

def test_partition_table_boot_fat_root_and_data_ext4(built):
    parts = built.partitions()
    assert [p["type"] for p in parts] == ["c", "83", "83"]
    assert all(p["start"] % 8192 == 0 for p in parts), "partitions start on 4 MiB boundaries"
    labels = [probe(built.img, built.offset(n)) for n in (1, 2, 3)]
    assert [(x["TYPE"], x["LABEL"]) for x in labels] == [
        ("vfat", "KIOSKBOOT"), ("ext4", "KIOSKROOT"), ("ext4", "KIOSKDATA")]


def test_boot_partition_carries_settings_sample_image_id_and_kernel(built):
    listing = subprocess.run(["mdir", "-b", "-i", f"{built.img}@@{built.offset(1)}", "::/"],
                             check=True, capture_output=True, text=True).stdout
    names = {line.strip().lstrip(":/").lower() for line in listing.splitlines()}
    for name in ("kiosk-settings.toml", "wifi.nmconnection.sample", "kiosk-image-id.txt",
                 "vmlinuz", "initrd.img", "cmdline.txt"):
        assert name in names, listing
    assert not any(n.endswith(".nmconnection") for n in names)
    assert not any(n.endswith(".kdb") or n == "kiosk.key" for n in names), "the queue never lives on FAT"


def test_root_in_image_has_service_enabled_image_id_and_no_card_identity(built, root_part):
    link = debugfs(root_part, "stat /etc/systemd/system/multi-user.target.wants/kiosk.service")
    assert "Type: symlink" in link and "/etc/systemd/system/kiosk.service" in link
    assert "Type: symlink" in debugfs(root_part, "stat /etc/systemd/system/sysinit.target.wants/kiosk-firstboot.service")
    image_id = debugfs(root_part, "cat /etc/kiosk-image-id")
    assert re.search(r"KIOSK_VERSION=\d+\.\d+", image_id) and re.search(r"KIOSK_COMMIT=[0-9a-f]{7,}", image_id)
    assert debugfs(root_part, "cat /etc/machine-id").strip() == "uninitialized", "each card makes its own"
    assert "ssh_host_" not in debugfs(root_part, "ls /etc/ssh")
    # the card's settings are made on the card, on its data partition
    link = debugfs(root_part, "stat /etc/kiosk/config.toml")
    assert "Type: symlink" in link and "/data/system/config.toml" in link


def test_root_read_only_logs_in_ram_data_partition_writable(built, root_part):
    fstab = debugfs(root_part, "cat /etc/fstab")
    mounts = {f[1]: f for f in (line.split() for line in fstab.splitlines())
              if len(f) >= 4 and not f[0].startswith("#")}
    assert mounts["/"][0] == "LABEL=KIOSKROOT" and "ro" in mounts["/"][3].split(",")
    assert mounts["/boot/firmware"][2] == "vfat" and "ro" in mounts["/boot/firmware"][3].split(",")
    data = mounts["/data"]
    assert data[:3] == ["LABEL=KIOSKDATA", "/data", "ext4"] and "rw" in data[3].split(",")
    for path in ("/tmp", "/var/log", "/var/lib/systemd"):
        assert mounts[path][2] == "tmpfs"
    # what must outlive a restart is bound in from the data partition
    assert mounts["/var/lib/bluetooth"][:3] == ["/data/system/bluetooth", "/var/lib/bluetooth", "none"]
    assert mounts["/var/lib/systemd/timesync"][0] == "/data/system/timesync"
    assert "Storage=volatile" in debugfs(root_part, "cat /etc/systemd/journald.conf.d/kiosk.conf")
    assert 'path = "/data/kiosk"' in debugfs(root_part, "cat /usr/share/kiosk/config.base.toml")
    assert "path=/data/system/NetworkManager" in debugfs(root_part, "cat /etc/NetworkManager/conf.d/kiosk.conf")
    cmdline = subprocess.run(["mtype", "-i", f"{built.img}@@{built.offset(1)}", "::/cmdline.txt"],
                             check=True, capture_output=True, text=True).stdout
    assert " ro " in f" {cmdline} " and "root=LABEL=KIOSKROOT" in cmdline
    # the data partition: the kiosk user's queue folder and root's system folder
    data_part = built.partitions()[2]
    assert data_part["size"] * 512 >= 32 * 2**20
    data_fs = f"{built.img}?offset={built.offset(3)}"
    kiosk_uid = next(line for line in (built.root / "etc/passwd").read_text().splitlines()
                     if line.startswith("kiosk:")).split(":")[2]
    kiosk_dir = debugfs(data_fs, "stat /kiosk")
    assert re.search(rf"User:\s+{kiosk_uid}\b", kiosk_dir) and re.search(r"Mode:\s+0700\b", kiosk_dir), kiosk_dir
    listing = debugfs(data_fs, "ls -l /system")
    for name in ("bluetooth", "NetworkManager", "ssh", "timesync"):
        assert name in listing


def test_kiosk_user_groups_and_units(built):
    groups = {line.split(":")[0]: line.rstrip().split(":")[3].split(",")
              for line in (built.root / "etc/group").read_text().splitlines()}
    for group in ("gpio", "bluetooth", "video", "input"):
        assert "kiosk" in groups[group], group
    unit = (built.root / "etc/systemd/system/kiosk.service").read_text()
    for line in ("Restart=always", "User=kiosk", "SDL_VIDEODRIVER=kmsdrm", "/opt/kiosk/venv/bin/kiosk run",
                 "/etc/kiosk/config.toml", "RequiresMountsFor=/data", "ReadWritePaths=/data/kiosk"):
        assert line in unit
    wants = built.root / "etc/systemd/system"
    assert (wants / "bluetooth.target.wants/bluetooth.service").is_symlink() or \
        (wants / "multi-user.target.wants/bluetooth.service").is_symlink() or \
        (wants / "dbus-org.bluez.service").is_symlink()
    assert (wants / "sysinit.target.wants/kiosk-grow-data.service").is_symlink()
    # ssh: enabled, but it starts only once the settings gave a key; host keys are the card's
    assert "ConditionPathExists=/data/system/ssh/authorized_keys" in (
        wants / "ssh.service.d/kiosk.conf").read_text()
    sshd = (built.root / "etc/ssh/sshd_config.d/kiosk.conf").read_text()
    assert "HostKey /data/system/ssh/ssh_host_ed25519_key" in sshd and "PasswordAuthentication no" in sshd
    assert "Include /etc/ssh/sshd_config.d/*.conf" in (built.root / "etc/ssh/sshd_config").read_text()
    lock = (built.out / "kiosk-0.1.0-ci.requirements.lock").read_text() if (
        built.out / "kiosk-0.1.0-ci.requirements.lock").exists() else next(built.out.glob("*.requirements.lock")).read_text()
    assert re.search(r"(?m)^cryptography==\d", lock) and re.search(r"(?mi)^pygame-ce==\d", lock)


def test_kiosk_unit_has_the_watchdog_and_the_clock_is_kept_on_the_data_partition(built, root_part):
    unit = (built.root / "etc/systemd/system/kiosk.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main", settings
    assert settings["WatchdogSec"] == "3min", settings
    # started once the saved clock is restored, never held back for network time
    assert "After=time-set.target time-sync.target" in unit
    pulls = [line for line in unit.splitlines() if line.startswith(("Wants=", "Requires=", "BindsTo="))]
    assert not [line for line in pulls if "time-wait-sync" in line or "time-sync.target" in line], pulls
    assert not list((built.root / "etc/systemd/system").glob("*.wants/systemd-time-wait-sync.service"))
    manager = debugfs(root_part, "cat /etc/systemd/system.conf.d/kiosk-watchdog.conf")
    assert re.search(r"(?m)^RuntimeWatchdogSec=15s$", manager), manager
    timesyncd = debugfs(root_part, "cat /etc/systemd/timesyncd.conf.d/kiosk.conf")
    assert re.search(r"(?m)^SaveIntervalSec=\d+$", timesyncd), timesyncd
    # timesyncd's state (its clock file) is bound from the data partition; its unit needs it mounted
    fstab = debugfs(root_part, "cat /etc/fstab")
    assert re.search(r"(?m)^/data/system/timesync\s+/var/lib/systemd/timesync\s+none\s+bind", fstab), fstab
    assert "StateDirectory=systemd/timesync" in (built.root / "lib/systemd/system/systemd-timesyncd.service").read_text()
    assert "RequiresMountsFor=/var/lib/systemd/timesync" in (
        built.root / "etc/systemd/system/systemd-timesyncd.service.d/kiosk.conf").read_text()
    assert (built.root / "etc/systemd/system/sysinit.target.wants/systemd-timesyncd.service").is_symlink()
    lock = next(built.out.glob("*.requirements.lock")).read_text()
    assert re.search(r"(?m)^cysystemd==\d", lock), "sd_notify for the watchdog"
    assert lock.splitlines() == [line for line in (IMAGE / "requirements.lock").read_text().splitlines()
                                 if not line.startswith("#")], "the image has exactly what the lock says"


def test_the_second_copy_is_mounted_before_the_kiosk_and_firstboot(built, root_part):
    """The queue's mirror: kiosk-grow-data makes partition 4 (MIRROR_MIB from
    image/config.sh), kiosk-mirror mounts a stick or it at /mirror before
    kiosk-firstboot (a stick brings a new card's key back) and the kiosk,
    which may write there."""
    etc = built.root / "etc/systemd/system"
    assert (etc / "sysinit.target.wants/kiosk-mirror.service").is_symlink()
    mirror = (etc / "kiosk-mirror.service").read_text()
    assert "ExecStart=/usr/local/lib/kiosk/mount-mirror /mirror /data" in mirror
    assert re.search(r"(?m)^After=.*kiosk-grow-data\.service", mirror)
    assert re.search(r"(?m)^Before=.*kiosk-firstboot\.service.*kiosk\.service", mirror)
    assert re.search(r"(?m)^After=.*kiosk-mirror\.service", (etc / "kiosk-firstboot.service").read_text())
    kiosk = (etc / "kiosk.service").read_text()
    assert re.search(r"(?m)^After=.*kiosk-mirror\.service", kiosk)
    assert re.search(r"(?m)^ReadWritePaths=.*(^| )/mirror( |$)", kiosk), "ProtectSystem=strict: /mirror writable"
    pulls = [line for line in kiosk.splitlines() if line.startswith(("Requires", "BindsTo"))]
    assert not [line for line in pulls if "mirror" in line], "no stick never stops the kiosk"
    grow = (etc / "kiosk-grow-data.service").read_text()
    assert "EnvironmentFile=-/etc/default/kiosk-grow-data" in grow
    config_sh = (IMAGE / "config.sh").read_text()
    mib = re.search(r"MIRROR_MIB=(\d+)", config_sh).group(1)
    assert f"MIRROR_MIB={mib}\n" in (built.root / "etc/default/kiosk-grow-data").read_text()
    for script in ("grow-data", "mount-mirror"):
        assert os.access(built.root / "usr/local/lib/kiosk" / script, os.X_OK), script
    assert (built.root / "mirror").is_dir() and not any((built.root / "mirror").iterdir())
    assert 'mirror = "/mirror/kiosk"' in debugfs(root_part, "cat /usr/share/kiosk/config.base.toml")


# -- inside the arm64 root, under qemu-user ----------------------------------------------

def test_kiosk_runs_in_the_arm64_root(built, scratch):
    python = built.root / "usr/bin/python3.11"       # the venv's python links to it
    assert python.read_bytes()[18:20] == b"\xb7\x00", "an aarch64 (EM_AARCH64) interpreter"
    inside = Path("/") / scratch.relative_to(built.root)
    (scratch / "config.toml").write_text(
        '[kiosk]\nid = "image-test"\noffline_behavior = "force_offline"\n'
        f'[storage]\npath = "{inside}/data"\n[stripe]\napi_base = "http://127.0.0.1:9"\n'
        '[reader]\nuse = "simulated"\n')
    with Chroot(built.root) as root:
        version = root.run("kiosk", "--version")
        assert version.returncode == 0 and version.stdout.startswith("kiosk 0."), version.stderr
        config = f"{inside}/config.toml"
        assert root.run("kiosk", "init", "--config", config).returncode == 0
        sale = root.run("kiosk", "charge", "5.00", "--offline", "--yes", "--json", "--config", config)
        assert sale.returncode == 0, sale.stderr
        assert json.loads(sale.stdout)["payment"]["state"] == "pending"
        queue = root.run("kiosk", "queue", "--all", "--json", "--config", config)
        assert [p["amount"] for p in json.loads(queue.stdout)] == [500]


SETTINGS = """\
# a vendor's settings
[kiosk]
id = "stall-7"
currency = "eur"
language = "ja"

[stripe]
secret_key = "sk_test_51abcdefghijklmnopqrstuv"   # the vendor's key

[limits]
per_transaction = 50.0

[reader]
use = "simulated"

[system]
hostname = "stall-7"
timezone = "Europe/Berlin"
"""

SETTINGS_WITH_SSH = SETTINGS.replace(
    'timezone = "Europe/Berlin"', 'timezone = "Europe/Berlin"\nssh_authorized_key = "ssh-ed25519 AAAAC3Nz kiosk@test"')

WIFI = "[connection]\nid=market\ntype=wifi\n[wifi]\nssid=Market\n[wifi-security]\nkey-mgmt=wpa-psk\npsk=hunter2hunter2\n"


def firstboot_tree(built, scratch, data: Path | None = None) -> tuple[Path, Path]:
    """A kiosk root and boot partition as the card has them on first boot
    (``data``: keep this data partition, as an update does)."""
    root, boot = scratch / "root", scratch / "boot"
    for rel in ("etc/passwd", "etc/group", "etc/hosts", "etc/hostname", "usr/share/kiosk/config.base.toml",
                "etc/machine-id"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built.root / rel, root / rel)
    (root / "usr/share/zoneinfo").symlink_to("/usr/share/zoneinfo")
    if data is not None:
        shutil.move(data, root / "data")
    else:
        (root / "data/kiosk").mkdir(parents=True)
        (root / "data/system").mkdir()
    boot.mkdir()
    return root, boot


def run_firstboot(built, chroot: "Chroot", root: Path, boot: Path) -> subprocess.CompletedProcess:
    inside = lambda p: str(Path("/") / p.relative_to(built.root))  # noqa: E731
    return chroot.run("/opt/kiosk/venv/bin/python", "/usr/local/sbin/kiosk-firstboot",
                      "--root", inside(root), "--boot", inside(boot))


def test_firstboot_applies_settings_to_the_data_partition_and_scrubs_secrets(built, scratch):
    root, boot = firstboot_tree(built, scratch)
    (boot / "kiosk-settings.toml").write_text(SETTINGS)
    (boot / "market.nmconnection").write_text(WIFI)
    with Chroot(built.root) as chroot:
        result = run_firstboot(built, chroot, root, boot)
        assert result.returncode == 0, result.stdout + result.stderr
        # the configuration the kiosk reads is one the kiosk accepts
        config = root / "data/system/config.toml"
        text = config.read_text()
        assert 'id = "stall-7"' in text and 'currency = "eur"' in text and "sk_test" not in text
        assert 'api_key_file = "/data/kiosk/stripe.key"' in text and 'path = "/data/kiosk"' in text
        assert os.readlink(root / "etc/kiosk/config.toml") == "/data/system/config.toml"
    kiosk_uid = int(next(line for line in (root / "etc/passwd").read_text().splitlines()
                         if line.startswith("kiosk:")).split(":")[2])
    data, system = root / "data/kiosk", root / "data/system"
    key = data / "stripe.key"
    assert key.read_text().strip() == "sk_test_51abcdefghijklmnopqrstuv"
    for path in (key, data / "kiosk.key"):
        assert path.stat().st_mode & 0o777 == 0o600 and path.stat().st_uid == kiosk_uid
    assert config.stat().st_uid == 0 and config.stat().st_mode & 0o777 == 0o640
    wifi = system / "NetworkManager/market.nmconnection"
    assert wifi.read_text() == WIFI and wifi.stat().st_mode & 0o777 == 0o600
    # the boot partition keeps no secret
    left = {p.name: p.read_bytes() for p in boot.iterdir()}
    assert set(left) == {"kiosk-settings.applied.toml"}
    assert not any(b"sk_test_51" in v or b"hunter2" in v for v in left.values())
    assert b'id = "stall-7"' in left["kiosk-settings.applied.toml"]
    # this card's own identity, kept on its data partition
    machine_id = (root / "etc/machine-id").read_text()
    assert re.fullmatch(r"[0-9a-f]{32}\n", machine_id) and (system / "machine-id").read_text() == machine_id
    host_key = system / "ssh/ssh_host_ed25519_key"
    assert host_key.stat().st_mode & 0o777 == 0o600 and (system / "ssh/ssh_host_ed25519_key.pub").exists()
    assert not list((root / "etc").glob("ssh/ssh_host_*")), "host keys live on the data partition"
    assert (root / "etc/hostname").read_text() == "stall-7\n" and (system / "hostname").read_text() == "stall-7\n"
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/Europe/Berlin"
    assert not (system / "ssh/authorized_keys").exists(), "no ssh key given: ssh stays off"


def test_a_new_root_takes_the_cards_identity_from_the_data_partition(built, scratch):
    """After an update (image/flash keeps partition 3), the new root's first start
    gets the same settings, machine-id, host name, ssh host keys and queue key."""
    first = scratch / "first"
    first.mkdir()
    root, boot = firstboot_tree(built, first)
    (boot / "kiosk-settings.toml").write_text(SETTINGS_WITH_SSH)
    with Chroot(built.root) as chroot:
        assert run_firstboot(built, chroot, root, boot).returncode == 0
        before = {p.relative_to(root / "data"): p.read_bytes()
                  for p in (root / "data").rglob("*") if p.is_file()}
        machine_id = (root / "etc/machine-id").read_text()
        # files made under an older image whose kiosk user had other ids
        for path in (root / "data/kiosk").rglob("*"):
            os.lchown(path, 4321, 4321)
        os.chown(root / "data/system/config.toml", 0, 4321)
        # the update: a fresh root from the image, the old data partition, and the
        # boot partition as image/flash leaves it (the applied settings, no sample)
        second = scratch / "second"
        second.mkdir()
        new_root, new_boot = firstboot_tree(built, second, data=root / "data")
        shutil.copy2(boot / "kiosk-settings.applied.toml", new_boot)
        assert (new_root / "etc/machine-id").read_text().strip() == "uninitialized"
        result = run_firstboot(built, chroot, new_root, new_boot)
        assert result.returncode == 0, result.stdout + result.stderr
    assert "restored" in result.stdout
    after = {p.relative_to(new_root / "data"): p.read_bytes()
             for p in (new_root / "data").rglob("*") if p.is_file()}
    assert after == before, "nothing on the data partition changed"
    assert (new_root / "etc/machine-id").read_text() == machine_id
    assert (new_root / "etc/hostname").read_text() == "stall-7\n"
    assert os.readlink(new_root / "etc/localtime") == "/usr/share/zoneinfo/Europe/Berlin"
    assert os.readlink(new_root / "etc/kiosk/config.toml") == "/data/system/config.toml"
    assert (new_root / "data/system/ssh/authorized_keys").read_text().startswith("ssh-ed25519 AAAAC3Nz")
    assert not (new_root / "run/kiosk/firstboot-error.txt").exists()
    # this root's kiosk user owns the queue again, its group reads the configuration
    uid, gid = (int(n) for n in next(line for line in (new_root / "etc/passwd").read_text().splitlines()
                                     if line.startswith("kiosk:")).split(":")[2:4])
    assert (uid, gid) == (900, 900), "fixed ids: files on cards outlive the root"
    assert {(p.stat().st_uid, p.stat().st_gid) for p in (new_root / "data/kiosk").rglob("*")} == {(uid, gid)}
    assert (new_root / "data/system/config.toml").stat().st_gid == gid


def test_firstboot_sets_the_mirror_only_where_there_is_one_and_a_new_card_takes_its_key_back(built, scratch):
    """kiosk-firstboot writes [storage] mirror only when kiosk-mirror found a
    stick or partition (/run/kiosk/mirror); `kiosk init` then puts the key
    and the queue there, the kiosk user's; a new card with that stick gets
    both back instead of a new key."""
    inside = lambda p: str(Path("/") / p.relative_to(built.root))  # noqa: E731
    none = scratch / "none"
    none.mkdir()
    root, boot = firstboot_tree(built, none)
    (boot / "kiosk-settings.toml").write_text(SETTINGS)
    with Chroot(built.root) as chroot:
        assert run_firstboot(built, chroot, root, boot).returncode == 0
        assert "mirror" not in (root / "data/system/config.toml").read_text(), "no place: no alarm to clear"

        # a card with its mirror partition (or a stick) mounted
        first = scratch / "first"
        first.mkdir()
        root, boot = firstboot_tree(built, first)
        (root / "run/kiosk").mkdir(parents=True)
        (root / "run/kiosk/mirror").write_text("partition /dev/mmcblk0p4 ext4\n")
        (root / "mirror/kiosk").mkdir(parents=True)
        (boot / "kiosk-settings.toml").write_text(SETTINGS)
        result = run_firstboot(built, chroot, root, boot)
        assert result.returncode == 0, result.stdout + result.stderr
        assert 'mirror = "/mirror/kiosk"' in (root / "data/system/config.toml").read_text()
        copy = root / "mirror/kiosk"
        assert (copy / "kiosk.key").read_bytes() == (root / "data/kiosk/kiosk.key").read_bytes()
        assert {(p.stat().st_uid, p.stat().st_mode & 0o777) for p in copy.iterdir()} == {(900, 0o600)}
        # a sale, kept on both copies
        config = scratch / "sell.toml"
        config.write_text('[kiosk]\nid = "stall-7"\ncurrency = "eur"\noffline_behavior = "force_offline"\n'
                          f'[storage]\npath = "{inside(root / "data/kiosk")}"\nmirror = "{inside(copy)}"\n'
                          '[stripe]\napi_base = "http://127.0.0.1:9"\n[reader]\nuse = "simulated"\n')
        sale = chroot.run("kiosk", "charge", "4.50", "--offline", "--yes", "--config", inside(config))
        assert sale.returncode == 0, sale.stderr
        assert (copy / "live.kdb").read_bytes() == (root / "data/kiosk/live.kdb").read_bytes()

        # a vendor's settings never choose the mirror: the image does
        own = scratch / "own"
        own.mkdir()
        bad_root, bad_boot = firstboot_tree(built, own)
        (bad_boot / "kiosk-settings.toml").write_text(SETTINGS + '\n[storage]\nmirror = "/data/copy"\n')
        assert run_firstboot(built, chroot, bad_root, bad_boot).returncode == 1
        assert "[storage] mirror is set by the image" in (bad_root / "run/kiosk/firstboot-error.txt").read_text()

        # the card lost: a new card, the same stick
        second = scratch / "second"
        second.mkdir()
        new_root, new_boot = firstboot_tree(built, second)
        (new_root / "run/kiosk").mkdir(parents=True)
        (new_root / "run/kiosk/mirror").write_text("stick /dev/sda1 ext4\n")
        shutil.move(copy, new_root / "mirror/kiosk")
        (new_boot / "kiosk-settings.toml").write_text(SETTINGS)
        result = run_firstboot(built, chroot, new_root, new_boot)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "the key and the queue were brought back from the mirror" in result.stdout, result.stdout
        assert (new_root / "data/kiosk/kiosk.key").read_bytes() == (root / "data/kiosk/kiosk.key").read_bytes()
        config.write_text(config.read_text().replace(inside(root / "data/kiosk"), inside(new_root / "data/kiosk"))
                          .replace(inside(copy), inside(new_root / "mirror/kiosk")))
        queue = chroot.run("kiosk", "queue", "--all", "--json", "--config", inside(config))
        assert queue.returncode == 0, queue.stderr
        assert [p["amount"] for p in json.loads(queue.stdout)] == [450]

        # a new card whose stick's key was cut to 0 bytes (a power cut right after an earlier
        # release renamed it onto the FAT stick): a queue of its own, the stick's copy kept, an alarm
        third = scratch / "third"
        third.mkdir()
        cut_root, cut_boot = firstboot_tree(built, third)
        (cut_root / "run/kiosk").mkdir(parents=True)
        (cut_root / "run/kiosk/mirror").write_text("stick /dev/sda1 vfat\n")
        stick = cut_root / "mirror/kiosk"
        shutil.copytree(new_root / "mirror/kiosk", stick)
        (stick / "kiosk.key").write_bytes(b"")
        (cut_boot / "kiosk-settings.toml").write_text(SETTINGS)
        result = run_firstboot(built, chroot, cut_root, cut_boot)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "key is damaged" in result.stdout and "kiosk recover" in result.stdout, result.stdout
        assert list(stick.glob("live.kdb.bad-*")), "the stick's copy is kept"
        assert (stick / "kiosk.key").read_bytes() == (cut_root / "data/kiosk/kiosk.key").read_bytes()
        assert not (cut_boot / "kiosk-settings.toml").exists(), "applied, its secrets scrubbed, all the same"


def test_firstboot_turns_ssh_off_when_the_key_is_taken_out(built, scratch):
    root, boot = firstboot_tree(built, scratch)
    (boot / "kiosk-settings.toml").write_text(SETTINGS_WITH_SSH)
    with Chroot(built.root) as chroot:
        assert run_firstboot(built, chroot, root, boot).returncode == 0
        assert (root / "data/system/ssh/authorized_keys").exists()
        (boot / "kiosk-settings.toml").write_text(SETTINGS)
        result = run_firstboot(built, chroot, root, boot)
    assert result.returncode == 0 and "ssh off" in result.stdout
    assert not (root / "data/system/ssh/authorized_keys").exists()


@pytest.mark.parametrize("spelling", [
    'stripe.secret_key = "sk_test_51abcdefghijklmnopqrstuv"\n',
    'stripe = { secret_key = "sk_test_51abcdefghijklmnopqrstuv" }\n',
])
def test_firstboot_refuses_a_key_it_could_not_scrub(built, scratch, spelling):
    """A key written some other way would stay on the FAT partition: refused, nothing applied."""
    root, boot = firstboot_tree(built, scratch)
    body = SETTINGS.split("[stripe]")[0] + SETTINGS.split('# the vendor\'s key\n')[1]
    (boot / "kiosk-settings.toml").write_text(spelling + body)
    with Chroot(built.root) as chroot:
        result = run_firstboot(built, chroot, root, boot)
    assert result.returncode == 1, result.stdout + result.stderr
    message = (root / "run/kiosk/firstboot-error.txt").read_text()
    assert "on a line of its own" in message and "sk_test_51" not in message
    assert not (root / "data/kiosk/stripe.key").exists() and not (root / "data/system/config.toml").exists()


def test_firstboot_refuses_a_bad_settings_file_and_says_why(built, scratch):
    root, boot = firstboot_tree(built, scratch)
    bad = SETTINGS.replace('currency = "eur"', 'currency = "euro"').replace("language", "langauge")
    (boot / "kiosk-settings.toml").write_text(bad)
    (boot / "broken.nmconnection").write_text("ssid=Market\n")
    inside = lambda p: str(Path("/") / p.relative_to(built.root))  # noqa: E731
    with Chroot(built.root) as chroot:
        result = run_firstboot(built, chroot, root, boot)
        assert result.returncode == 1
        message = (root / "run/kiosk/firstboot-error.txt").read_text()
        assert "NOT APPLIED" in message and "langauge" in message and "broken.nmconnection" in message
        assert "sk_test" not in message
        shot = chroot.run("/opt/kiosk/venv/bin/python", "/usr/local/lib/kiosk/show-message",
                          inside(root / "run/kiosk/firstboot-error.txt"), "--out", inside(scratch / "error.png"))
        assert shot.returncode == 0, shot.stderr
    assert (scratch / "error.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "langauge" in (boot / "kiosk-settings-ERROR.txt").read_text()
    # nothing applied, nothing moved: the vendor fixes the file and tries again
    assert not (root / "data/system/config.toml").exists() and not (root / "data/kiosk/stripe.key").exists()
    assert (boot / "kiosk-settings.toml").read_text() == bad and (boot / "broken.nmconnection").exists()


# -- a real boot under qemu-system-aarch64 -M virt -------------------------------------

# Run by systemd.run= (kernel-command-line.service) once the system is up; its
# lines go to the serial console, which the test reads.
PROBE_COMMON = """\
exec > /dev/ttyAMA0 2>&1
echo PROBE-START
systemctl start multi-user.target
sleep 12        # the kiosk has to stay up, not just start
echo "KIOSK $(systemctl is-active kiosk.service) restarts=$(systemctl show -p NRestarts --value kiosk.service)"
echo "NOTIFY $(systemctl show -p Type -p NotifyAccess -p WatchdogUSec kiosk.service | tr '\\n' ' ')"
echo "HWWATCHDOG $(systemctl show -p RuntimeWatchdogUSec) $(cat /sys/class/watchdog/watchdog0/state 2>/dev/null || echo none)"
echo "CLOCK $(date +%s) $(findmnt -no SOURCE /var/lib/systemd/timesync)"
for m in / /data /boot/firmware /var/lib/bluetooth; do echo "MOUNT $m $(findmnt -no FSTYPE,OPTIONS $m | cut -d, -f1)"; done
if touch /probe 2>/dev/null; then echo ROOT-WRITABLE; else echo ROOT-READONLY; fi
touch /data/kiosk/probe && echo DATA-WRITABLE && rm /data/kiosk/probe
echo "UNIT firstboot $(systemctl show -p ConditionResult --value kiosk-firstboot) $(systemctl is-active kiosk-firstboot)"
echo "UNIT grow $(systemctl is-active kiosk-grow-data)"
echo "UNIT mirror $(systemctl is-active kiosk-mirror)"
echo "MIRROR $(findmnt -no FSTYPE /mirror) $(cat /run/kiosk/mirror 2>/dev/null)"
echo "MIRRORDIR $(stat -c '%U %a' /mirror/kiosk 2>/dev/null)"
echo "MIRRORPARTS $(blkid -c /dev/null -t LABEL=KIOSKMIRROR -o device | tr '\\n' ' ')"
[ -e /mirror/kiosk/STALE ] && echo MIRROR-STALE
echo "UNIT ssh $(systemctl is-active ssh)"
echo "UNIT bluetooth $(systemctl is-enabled bluetooth) $(systemctl is-active bluetooth)"
echo "UNIT NetworkManager $(systemctl is-active NetworkManager)"
echo "FAILED $(systemctl --failed --plain --no-legend --no-pager | awk '{print $1}' | tr '\\n' ' ')"
echo "BOOTFILES $(ls /boot/firmware | tr '\\n' ' ')"
echo "DATASIZE $(df -B1M --output=size /data | tail -1 | tr -d ' ')"
echo "HOSTNAME $(hostname)"
echo "MACHINEID $(cat /etc/machine-id)"
journalctl -b -u kiosk.service --no-pager -o cat | tail -4 | sed 's/^/KIOSKLOG /'
{wait}systemctl stop kiosk.service        # the queue has one owner at a time
"""
# the kiosk's WATCHDOG=1 reaches systemd; the clock file on the data partition is kept fresh
PROBE_WAIT = """\
before=$(systemctl show -p WatchdogTimestampMonotonic --value kiosk.service)
for i in $(seq 60); do
    beat=$(systemctl show -p WatchdogTimestampMonotonic --value kiosk.service)
    saved=$(stat -c %Y /var/lib/systemd/timesync/clock 2>/dev/null || echo 0)
    [ "$beat" != "$before" ] && [ $(( $(date +%s) - saved )) -lt 90 ] && break
    sleep 3
done
echo "BEAT $before $beat"
echo "SAVED $(date +%s) $saved"
"""
PROBE_SELL = PROBE_COMMON.replace("{wait}", PROBE_WAIT) + """\
for amount in 5.00 7.25; do
    runuser -u kiosk -- /usr/local/bin/kiosk charge $amount --offline --yes --card visa --config /etc/kiosk/config.toml >/dev/null \\
        && echo "SOLD $amount"
done
cmp /data/kiosk/live.kdb /mirror/kiosk/live.kdb && cmp /data/kiosk/kiosk.key /mirror/kiosk/kiosk.key && echo MIRROR-SAME
echo SALES-STORED
sleep 600       # the test cuts the power here
"""
PROBE_CHECK = PROBE_COMMON.replace("{wait}", "") + """\
runuser -u kiosk -- /usr/local/bin/kiosk queue --json --config /etc/kiosk/config.toml > /run/queue.json
/usr/bin/python3 -c 'import json; [print("PAYMENT", p["state"], p["amount"], p["currency"]) for p in json.load(open("/run/queue.json"))]'
cmp /data/kiosk/live.kdb /mirror/kiosk/live.kdb && cmp /data/kiosk/kiosk.key /mirror/kiosk/kiosk.key && echo MIRROR-SAME
runuser -u kiosk -- /usr/local/bin/kiosk notices --config /etc/kiosk/config.toml 2>&1 | grep -i mirror | sed 's/^/NOTICE /'
echo PROBE-DONE
"""


class Machine:
    """The CI image on a virtual arm64 machine, booted with a probe script."""

    def __init__(self, built: Built, folder: Path, grow_mib: int):
        self.qemu = shutil.which("qemu-system-aarch64")
        self.folder = folder
        self.disk = folder / "disk.img"
        subprocess.run(["cp", "--sparse=always", str(built.img), str(self.disk)], check=True)
        # a card bigger than the image, as every real one is
        os.truncate(self.disk, self.disk.stat().st_size + grow_mib * 2**20)
        self.boot_fs = f"{self.disk}@@{built.offset(1)}"
        for name in ("vmlinuz", "initrd.img", "cmdline.txt"):
            subprocess.run(["mcopy", "-n", "-i", self.boot_fs, f"::/{name}", str(folder / name)], check=True)

    def put(self, name: str, text: str) -> None:
        (self.folder / name).write_text(text)
        subprocess.run(["mcopy", "-o", "-i", self.boot_fs, str(self.folder / name), f"::/{name}"], check=True)

    def boot(self, probe: str, until: str, timeout: float = 900, rtc: str | None = None,
             stick: Path | None = None) -> tuple[str, float]:
        """Boot with PROBE; return the serial log once it shows UNTIL (the
        machine is then killed: a power cut) or the machine powers off.
        ``rtc``: what the machine's real-time clock says at power-on (qemu's ``-rtc base=``);
        ``stick``: a second disk plugged in (a USB stick, as far as the kiosk can tell)."""
        self.put("probe.sh", probe)
        cmdline = (self.folder / "cmdline.txt").read_text().strip().replace(" quiet", "")
        # no login prompt on the serial console: its getty would hang up the probe's output
        append = (f'{cmdline} systemd.unit=kernel-command-line.service systemd.run="/bin/sh /boot/firmware/probe.sh" '
                  "systemd.run_success_action=poweroff systemd.run_failure_action=poweroff "
                  "systemd.mask=serial-getty@ttyAMA0.service")
        serial = self.folder / f"serial-{time.monotonic_ns()}.log"
        started = time.monotonic()
        machine = subprocess.Popen(
            [self.qemu, "-M", "virt", "-cpu", "cortex-a53", "-smp", "2", "-m", "1024", "-display", "none",
             "-no-reboot", "-kernel", str(self.folder / "vmlinuz"), "-initrd", str(self.folder / "initrd.img"),
             "-append", append, "-drive", f"file={self.disk},format=raw,if=virtio",
             "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-device,netdev=n0",
             "-serial", f"file:{serial}", "-monitor", "none",
             "-device", "i6300esb",         # a hardware watchdog for systemd to drive (the Pi's is bcm2835_wdt)
             *(["-rtc", f"base={rtc}"] if rtc else []),
             *(["-drive", f"file={stick},format=raw,if=virtio"] if stick else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while machine.poll() is None and time.monotonic() - started < timeout:
                if serial.exists() and until in serial.read_text(errors="replace"):
                    break
                time.sleep(0.5)
        finally:
            machine.kill()      # the power cut, when it is still running
            machine.wait()
        return serial.read_text(errors="replace"), time.monotonic() - started


def probe_lines(log: str) -> dict[str, str]:
    """The probe's lines: ``MOUNT /data ext4 rw`` -> {"MOUNT /data": "ext4 rw"}."""
    lines: dict[str, str] = {}
    for line in log.splitlines():
        words = line.split() or [""]
        if words[0] in ("MOUNT", "UNIT") and len(words) > 1:
            lines[f"{words[0]} {words[1]}"] = " ".join(words[2:])
        elif words[0] in ("KIOSK", "FAILED", "BOOTFILES", "DATASIZE", "HOSTNAME", "MACHINEID", "NOTIFY",
                          "HWWATCHDOG", "CLOCK", "BEAT", "SAVED", "MIRROR", "MIRRORDIR", "MIRRORPARTS"):
            lines[words[0]] = " ".join(words[1:])
    return lines


def boot_keeps_the_sales(machine: Machine, request, label: str, rtc: str | None = None,
                         stick: Path | None = None) -> tuple[str, dict[str, str]]:
    """Boot with the checking probe: the kiosk up, no failed unit, both sales still
    pending, and the same on the mirror."""
    log, seconds = machine.boot(PROBE_CHECK, until="PROBE-DONE", rtc=rtc, stick=stick)
    say(request, f"qemu {label} to checked queue: {seconds:.0f} s")
    tail = log[-5000:]
    assert "PROBE-DONE" in log, tail
    lines = probe_lines(log)
    assert lines["KIOSK"].startswith("active restarts=0"), tail
    payments = sorted(re.findall(r"(?m)^PAYMENT (\w+) (\d+) (\w+)", log))
    assert payments == [("pending", "500", "eur"), ("pending", "725", "eur")], tail
    assert lines["FAILED"].strip() == "", lines["FAILED"]
    assert "MIRROR-SAME" in log, tail
    return log, lines


def card_partitions(disk: Path) -> list[dict]:
    return json.loads(subprocess.run(["sfdisk", "--json", str(disk)], check=True, capture_output=True,
                                     text=True).stdout)["partitiontable"]["partitions"]


def test_boots_sells_survives_a_power_cut_and_an_update_and_keeps_its_payments(built, tmp_path, request):
    if not shutil.which("qemu-system-aarch64"):
        pytest.skip("qemu-system-aarch64 missing: apt-get install qemu-system-arm")
    machine = Machine(built, tmp_path, grow_mib=512)
    data_before = built.partitions()[2]["size"] * 512 // 2**20
    machine.put("kiosk-settings.toml", SETTINGS)

    # first start: settings applied, data partition grown, the kiosk up; two sales; power cut
    log, seconds = machine.boot(PROBE_SELL, until="SALES-STORED")
    say(request, f"qemu first boot to two stored sales: {seconds:.0f} s")
    tail = log[-5000:]
    assert "SALES-STORED" in log, tail
    first = probe_lines(log)
    assert first["KIOSK"].startswith("active restarts=0"), tail
    assert "ROOT-READONLY" in log and "DATA-WRITABLE" in log, tail
    assert first["MOUNT /"] == "ext4 ro" and first["MOUNT /data"] == "ext4 rw", first
    assert first["MOUNT /var/lib/bluetooth"].startswith("ext4"), "pairings are on the data partition"
    assert first["UNIT firstboot"] == "yes active" and first["UNIT grow"] == "active", first
    # no Bluetooth adapter in the virtual machine: enabled, it starts when one appears
    assert first["UNIT bluetooth"].startswith("enabled"), first
    assert first["UNIT NetworkManager"] == "active", first
    assert first["UNIT ssh"] == "inactive", "no ssh key in the settings: ssh stays off"
    assert first["FAILED"].strip() == "", first["FAILED"]
    boot_files = first["BOOTFILES"].split()
    assert "kiosk-settings.applied.toml" in boot_files and "kiosk-settings.toml" not in boot_files
    assert first["HOSTNAME"] == "stall-7"
    assert int(first["DATASIZE"]) >= data_before + 400, f"grown from {data_before} MiB: {first['DATASIZE']}"
    assert re.fullmatch(r"[0-9a-f]{32}", first["MACHINEID"])
    assert "SOLD 5.00" in log and "SOLD 7.25" in log, tail
    # the second copy: partition 4 made at first boot, mounted at /mirror, every sale on both
    assert first["UNIT mirror"] == "active", first
    assert first["MIRROR"].split()[:2] == ["ext4", "partition"], first["MIRROR"]
    assert first["MIRRORDIR"] == "kiosk 700", first["MIRRORDIR"]
    assert "MIRROR-SAME" in log, tail
    # Type=notify: "active" above means READY=1 came; then WATCHDOG=1 (systemd's last-ping time moved)
    assert all(f in first["NOTIFY"].split() for f in ("Type=notify", "NotifyAccess=main", "WatchdogUSec=3min")), first
    before, beat = first["BEAT"].split()
    assert beat != before, f"no WATCHDOG=1 from the kiosk: {first['BEAT']}"
    # systemd drives the (virtual) hardware watchdog
    assert first["HWWATCHDOG"] == "RuntimeWatchdogUSec=15s active", first["HWWATCHDOG"]
    # the clock file lives on the data partition and is saved without any network
    assert first["CLOCK"].split()[1].endswith("[/system/timesync]"), first["CLOCK"]
    now, saved = map(int, first["SAVED"].split())
    assert now - saved < 90, f"clock file not saved lately: {first['SAVED']}"

    # the partition table on the "card": data, then the mirror partition to the card's end
    parts = card_partitions(machine.disk)
    assert len(parts) == 4, parts
    data, mirror = parts[2], parts[3]
    assert (mirror["start"] + mirror["size"]) * 512 > machine.disk.stat().st_size - 2**20
    assert mirror["start"] >= data["start"] + data["size"] and mirror["size"] * 512 >= 60 * 2**20, parts
    assert probe(machine.disk, mirror["start"] * 512)["LABEL"] == "KIOSKMIRROR"
    assert first["MIRROR"].split()[2] == first["MIRRORPARTS"].strip(), first

    # a power cut at first boot after the data partition grew, before the mirror partition was
    # made and the data ext4 grown: the card is 256 MiB bigger, partition 3 ends 64 MiB before
    # its end (a filesystem there from an earlier life of the card), the ext4 is smaller
    os.truncate(machine.disk, machine.disk.stat().st_size + 256 * 2**20)
    sectors = machine.disk.stat().st_size // 512
    subprocess.run(["sfdisk", "--quiet", "--delete", str(machine.disk), "4"], check=True)
    subprocess.run(["sfdisk", "--quiet", "-N", "3", str(machine.disk)], check=True, text=True,
                   input=f", {(sectors - 64 * 2048) // 2048 * 2048 - data['start']}\n")
    stale = tmp_path / "stale.ext4"
    (tmp_path / "stale/kiosk").mkdir(parents=True)
    (tmp_path / "stale/kiosk/STALE").write_text("an earlier life of the card\n")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "KIOSKMIRROR", "-d", str(tmp_path / "stale"), str(stale), "64M"],
                   check=True)
    subprocess.run(["dd", f"if={stale}", f"of={machine.disk}", "bs=1M", f"seek={sectors // 2048 - 64}",
                    "conv=notrunc,sparse", "status=none"], check=True)

    # second start, after the power cut, on a machine whose clock says 2001 (a Pi has no clock
    # battery): not a first boot; the sales are still there; the clock is back at the saved time
    log, second = boot_keeps_the_sales(machine, request, "second boot", rtc="2001-01-01T00:00:00")
    assert int(second["CLOCK"].split()[0]) >= saved, f"clock not restored: {second['CLOCK']} < saved {saved}"
    assert second["UNIT firstboot"] == "no inactive", "the settings were applied once"
    assert second["MACHINEID"] == first["MACHINEID"] and second["HOSTNAME"] == "stall-7"
    assert int(second["DATASIZE"]) >= int(first["DATASIZE"]) + 200, "the interrupted grow was finished"
    # the mirror partition made anew (the stale filesystem wiped first), and healed from the data partition
    assert second["MIRROR"].split()[:2] == ["ext4", "partition"], second["MIRROR"]
    assert len(card_partitions(machine.disk)) == 4
    assert "MIRROR-STALE" not in log, "a filesystem left from an earlier life is never taken for the mirror"
    assert re.search(r"(?m)^NOTICE .*was missing: copied from", log), log[-5000:]

    # an update with image/flash: new boot and root partitions, the data partition kept
    update = subprocess.run([sys.executable, str(IMAGE / "flash"), "--yes", str(built.img), str(machine.disk)],
                            capture_output=True, text=True, timeout=900)
    assert update.returncode == 0, update.stdout + update.stderr
    assert "2 payments" in update.stdout, update.stdout
    log, third = boot_keeps_the_sales(machine, request, "first boot of the updated card")
    assert third["UNIT firstboot"] == "yes active", "the new root's first start"
    assert "machine-id restored from the data partition" in log, log[-5000:]
    assert third["MACHINEID"] == first["MACHINEID"] and third["HOSTNAME"] == "stall-7", third
    boot_files = third["BOOTFILES"].split()
    assert "kiosk-settings.applied.toml" in boot_files and "kiosk-settings.toml" not in boot_files, "no sample"
    # the update kept the mirror partition and its copy (MIRROR-SAME above)
    assert third["MIRROR"].split()[:2] == ["ext4", "partition"], third["MIRROR"]
    assert len(card_partitions(machine.disk)) == 4

    # a USB stick labelled KIOSKMIRROR (FAT, as bought) plugged in: used instead of the partition
    stick = tmp_path / "stick.img"
    subprocess.run(["mkfs.vfat", "-n", "KIOSKMIRROR", "-C", str(stick), str(64 * 1024)], check=True,
                   capture_output=True)
    log, fourth = boot_keeps_the_sales(machine, request, "a boot with a KIOSKMIRROR stick", stick=stick)
    assert fourth["MIRROR"].split()[:2] == ["vfat", "stick"], fourth["MIRROR"]
    assert fourth["MIRRORDIR"] == "kiosk 700", fourth["MIRRORDIR"]

    # the card lost: a freshly flashed card, the same settings, the stick in: the key and the queue come back
    new_card = tmp_path / "new-card"
    new_card.mkdir()
    replacement = Machine(built, new_card, grow_mib=512)
    replacement.put("kiosk-settings.toml", SETTINGS)
    log, fifth = boot_keeps_the_sales(replacement, request, "a new card's first boot with the stick", stick=stick)
    assert fifth["UNIT firstboot"] == "yes active" and fifth["MIRROR"].split()[:2] == ["vfat", "stick"], fifth
    assert re.search(r"kiosk-firstboot: .*the key and the queue were brought back from the mirror", log), log[-5000:]
