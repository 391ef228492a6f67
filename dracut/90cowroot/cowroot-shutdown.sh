#!/bin/sh
# dracut shutdown hook, for a shutdown that runs dracut's own /shutdown
# rather than cowroot's (cowroot boot copies itself to
# /run/initramfs/shutdown; dracut's restore does not replace a newer file,
# so this runs only when that copy could not be made). By now dracut has
# moved the old /run, the image host mount with it, to /oldsys/run,
# unmounted /oldroot, and removed the dm devices (90dm, hook 30); the
# image's loop device let go with them. The image host goes last. Fails
# while it is still busy, so dracut calls it again.
if grep -q ' /oldsys/run/cowroot/host ' /proc/mounts; then
    umount /oldsys/run/cowroot/host
fi
