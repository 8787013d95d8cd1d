#!/usr/bin/env bash
# The SyncTalk image's ENTRYPOINT: make the image's home files visible in the HOME of this run, then run the
# command (`docker run synctalk:latest python -u main.py …`; without one, main.py's help).
#
# The image keeps DeepSpeech's graph where upstream reads it, ~/.tensorflow/models (SyncTalk's
# data_utils/deepspeech_features/extract_ds_features.py:98 sets '~/.tensorflow/models/deepspeech-0_1_0-
# b90017e8.pb'; deepspeech_store.py:16 would download it there), under the image's HOME, /home/synctalk.
# Talkforge runs containers as the node's user with HOME=/tmp (gpu_nodes/runtime.py), so each file of the
# image's HOME is linked into the run's HOME first. A HOME this user cannot write becomes $TMPDIR (/tmp).
set -euo pipefail

link_image_home() {
    local seed=${ST_IMAGE_HOME:-/home/synctalk} file relative
    [[ -d $seed ]] || return 0
    if [[ -z ${HOME:-} || ! -w $HOME ]]; then
        export HOME=${TMPDIR:-/tmp}
    fi
    [[ $HOME -ef $seed ]] && return 0
    while IFS= read -r -d '' file; do
        relative=${file#"$seed"/}
        [[ -e $HOME/$relative ]] && continue
        mkdir -p "$HOME/$(dirname -- "$relative")"
        ln -s "$file" "$HOME/$relative"
    done < <(find "$seed" -type f -print0)
}

link_image_home
if [[ $# -eq 0 ]]; then
    set -- python main.py --help
fi
exec "$@"
