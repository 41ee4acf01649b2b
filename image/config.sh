# Shared settings of the image build (sourced by image/build and every stage).
: "${SUITE:=bookworm}"
: "${MIRROR:=http://deb.debian.org/debian}"
: "${SECURITY_MIRROR:=http://deb.debian.org/debian-security}"
VERSION="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -1)"
if [ -z "${COMMIT:-}" ]; then          # once per build (image/build exports it)
    COMMIT="$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
    if [ -n "$(git -C "$REPO" status --porcelain -- kiosk plugins pyproject.toml image 2>/dev/null)" ]; then
        COMMIT="$COMMIT-dirty"
    fi
fi
if [ "$CI" = 1 ]; then FLAVOUR=ci; else FLAVOUR=rpi; fi
NAME="kiosk-$VERSION-$FLAVOUR"
IMG="$OUT/$NAME.img"

# Partitions (MiB).  Boot: FAT32, the Pi firmware + the first-boot settings.
# Root: ext4, mounted read-only.  Data: ext4, the queue and its key.
BOOT_LABEL=KIOSKBOOT ROOT_LABEL=KIOSKROOT DATA_LABEL=KIOSKDATA
if [ "$CI" = 1 ]; then BOOT_MIB=64 DATA_MIB=64; else BOOT_MIB=256 DATA_MIB=512; fi
# The root's slot is fixed per flavour, bigger than the root, so that a later
# image's root fits in an older card's slot: image/flash can then update the
# card and keep its data partition (docs/updating.md).
if [ "$CI" = 1 ]; then ROOT_SLOT_MIB=1280; else ROOT_SLOT_MIB=3072; fi
# The queue's second copy (docs/image.md "The second copy"): at first boot
# kiosk-grow-data leaves this much at the card's end for partition 4, an ext4
# labelled KIOSKMIRROR; a USB stick with that label is used instead when plugged in.
MIRROR_LABEL=KIOSKMIRROR MIRROR_MIB=64

# Packages of every build; the full (Raspberry Pi) build adds PACKAGES_RPI.
PACKAGES="systemd systemd-sysv systemd-timesyncd udev dbus kmod iproute2 iputils-ping
 ca-certificates tzdata python3 python3-venv network-manager bluez openssh-server
 e2fsprogs dosfstools fdisk fonts-dejavu-core libgbm1 libegl1 libdrm2
 linux-image-arm64 initramfs-tools zstd libusb-1.0-0"
PACKAGES_RPI="raspi-firmware firmware-brcm80211 bluez-firmware wireless-regdb
 libgl1-mesa-dri libgles2 fonts-noto-cjk nano less"
# (no fake-hwclock: it saves to the read-only root; systemd-timesyncd keeps the clock on /data)
