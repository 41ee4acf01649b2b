"""image/flash, the tool that puts a kiosk image on an SD card without losing
the payments waiting on it (``image/flash --help``).  ``image/flash`` is
only its entry; the parts, each with one job, in the order a run uses them:

- :mod:`.cli`           the command line and the run from start to end
- :mod:`.common`        exit codes, Stop, the kiosk layout's labels, sizes
- :mod:`.disks`         MBR, FAT label and ext superblocks, from raw bytes
- :mod:`.image_file`    the image: streamed (.xz or not), scanned, staged
- :mod:`.target`        the card: inspected, in use?, still the same card?
- :mod:`.tools`         the disk tools (e2fsprogs, mtools), run in one line
- :mod:`.workdir`       the private folder in RAM the card's secrets pass through
- :mod:`.storage`       which files hold payments: the card's storage plugin says
- :mod:`.card_queue`    the queue copied off the data partition and listed
- :mod:`.boot_settings` the vendor's settings carried onto the new boot partition
- :mod:`.plan`          what may be done, the question, progress and the report
- :mod:`.writing`       writing the card and reading it back to verify
"""
