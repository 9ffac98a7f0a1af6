#!/usr/bin/env bash
# Installs the Debian data packages trainwell's lab reads (Fashion-MNIST, the KJV bible text).
# Quiet and quick when they are already present; a clear message, not a failure, when apt is missing.
set -u
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
[ -e /usr/lib/bible.data ] || need+=(bible-kjv)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "trainwell: apt-get not available; skipping ${need[*]} (the lab falls back to sklearn digits / bundled text)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "trainwell: not root and no passwordless sudo; skipping ${need[*]} (the lab uses its fallbacks)"
    exit 0
  fi
fi
echo "trainwell: installing Debian data packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
  $SUDO apt-get update -q >/dev/null 2>&1 || true
  $SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || echo "trainwell: could not install ${need[*]}; the lab uses its fallbacks"
fi
exit 0
