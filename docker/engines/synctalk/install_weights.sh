#!/usr/bin/env bash
# The pretrained files of the SyncTalk image (ZiqiaoPeng/SyncTalk @ d2427a3), checked before anything is
# built. Two modes:
#
#   install_weights.sh WEIGHTS_DIR STAGE    the build inputs: check the build context's weights/ folder and
#                                           lay the files out under STAGE where upstream and its libraries
#                                           read them (the Dockerfile copies STAGE's trees into the image):
#       STAGE/synctalk/<path in the repository>/<file>
#       STAGE/home/.tensorflow/models/<file>          $HOME/.tensorflow/models
#       STAGE/torch/hub/checkpoints/<file>            $TORCH_HOME/hub/checkpoints
#   install_weights.sh --repository CHECKOUT the files upstream ships in its repository (checked right after
#                                           the clone: a clone without them, e.g. from a mirror that drops
#                                           large blobs, stops the build there)
#
# A missing required file stops the build at once, with one line per missing file saying where to get it.
# Files whose names carry a hash prefix are checked against it (VERIFY_WEIGHTS=0 skips that). Nothing is ever
# downloaded: the image must run without network access.
set -euo pipefail

# name|destination (under STAGE)|hash check (algorithm:prefix, or -)|where to get it|where upstream reads it
# (file:line or file:first-last at d2427a3, comma-separated; tests/docker/test_synctalk_image.py checks that each
# cited place names the file, or for files a library fetches, makes the call that fetches it)
REQUIRED=(
    "79999_iter.pth|synctalk/data_utils/face_parsing|-|BiSeNet face parsing from AD-NeRF (README.md:83)|data_utils/face_parsing/test.py:146"
    "01_MorphableModel.mat|synctalk/data_utils/face_tracking/3DMM|-|Basel Face Model 2009 (faces.dmi.unibas.ch, licence required; README.md:95-101)|data_utils/face_tracking/convert_BFM.py:4"
    "exp_info.npy|synctalk/data_utils/face_tracking/3DMM|-|AD-NeRF data_util/face_tracking/3DMM/exp_info.npy (README.md:89)|data_utils/face_tracking/convert_BFM.py:25"
    "topology_info.npy|synctalk/data_utils/face_tracking/3DMM|-|AD-NeRF data_util/face_tracking/3DMM/topology_info.npy (README.md:92)|data_utils/face_tracking/convert_BFM.py:5,data_utils/face_tracking/render_3dmm.py:98"
    "deepspeech-0_1_0-b90017e8.pb|home/.tensorflow/models|sha1:b90017e8|osmr/deepspeech_features release v0.0.1 (deepspeech-0_1_0-b90017e8.pb.zip, unzipped)|data_utils/deepspeech_features/extract_ds_features.py:98,data_utils/deepspeech_features/deepspeech_store.py:32"
    "resnet18-5c106cde.pth|torch/hub/checkpoints|sha256:5c106cde|download.pytorch.org/models/resnet18-5c106cde.pth (face parsing backbone)|data_utils/face_parsing/resnet.py:11"
    "alexnet-owt-7be5be79.pth|torch/hub/checkpoints|sha256:7be5be79|download.pytorch.org/models/alexnet-owt-7be5be79.pth (LPIPS' AlexNet, built by every Trainer)|nerf_triplane/utils.py:698,nerf_triplane/utils.py:489"
    "s3fd-619a316812.pth|torch/hub/checkpoints|-|face_alignment 1.4.1 face detector: adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth|data_utils/process.py:55-57,nerf_triplane/utils.py:539-541"
    "2DFAN4-cd938726ad.zip|torch/hub/checkpoints|-|face_alignment 1.4.1 landmarks (torch 2.0): adrianbulat.com/downloads/python-fan/2DFAN4-cd938726ad.zip|data_utils/process.py:55-57,nerf_triplane/utils.py:539-541"
)
# Installed when given: README.md:90-91 downloads them with the 3DMM files, but no code at d2427a3 reads them.
OPTIONAL=(
    "keys_info.npy|synctalk/data_utils/face_tracking/3DMM|-|AD-NeRF data_util/face_tracking/3DMM/keys_info.npy (README.md:90)|-"
    "sub_mesh.obj|synctalk/data_utils/face_tracking/3DMM|-|AD-NeRF data_util/face_tracking/3DMM/sub_mesh.obj (README.md:91)|-"
)
# Shipped in the repository at d2427a3 (path in the checkout|where upstream reads it).
SHIPPED=(
    "data_utils/UNFaceFlow/pretrain_model/raft-small.pth|data_utils/UNFaceFlow/test_flow.py:43-44,data_utils/UNFaceFlow/test_flow.py:48-49"
    "data_utils/UNFaceFlow/sgd_NNRT_model_epoch19008_50000.pth|data_utils/UNFaceFlow/test_flow.py:47"
    "data_utils/blendshape_capture/face_landmarker.task|data_utils/blendshape_capture/main.py:27"
    "nerf_triplane/checkpoints/audio_visual_encoder.pth|nerf_triplane/provider.py:174,nerf_triplane/provider.py:197"
)

usage() {
    echo "usage: install_weights.sh WEIGHTS_DIR STAGE | install_weights.sh --repository CHECKOUT" >&2
    exit 2
}

check_repository() { # check_repository CHECKOUT
    local checkout=$1 entry path missing=()
    for entry in "${SHIPPED[@]}"; do
        path=${entry%%|*}
        [[ -s "$checkout/$path" ]] || missing+=("  - $path  (read at ${entry#*|})")
    done
    if ((${#missing[@]})); then
        {
            echo "error: the SyncTalk checkout $checkout lacks pretrained files upstream ships in the repository:"
            printf '%s\n' "${missing[@]}"
            echo "Clone https://github.com/ZiqiaoPeng/SyncTalk in full (not through a mirror that drops large files)."
        } >&2
        exit 1
    fi
    echo "the checkout has the ${#SHIPPED[@]} pretrained files upstream ships"
}

if [[ ${1:-} == --repository ]]; then
    [[ $# -eq 2 ]] || usage
    check_repository "$2"
    exit 0
fi
[[ $# -eq 2 ]] || usage
weights=$1
stage=$2
verify=${VERIFY_WEIGHTS:-1}

if [[ ! -d "$weights" ]]; then
    echo "error: the weights folder $weights does not exist" >&2
    exit 1
fi

missing=()
for entry in "${REQUIRED[@]}"; do
    IFS='|' read -r name _ _ source _ <<<"$entry"
    if [[ ! -s "$weights/$name" ]]; then
        missing+=("  - $name  ($source)")
    fi
done
if ((${#missing[@]})); then
    {
        echo "error: required pretrained files are missing from docker/engines/synctalk/weights/:"
        printf '%s\n' "${missing[@]}"
        echo "Put them there (see docker/engines/synctalk/weights/README.md) and build again."
    } >&2
    exit 1
fi

# 01_MorphableModel.mat is a MATLAB file: a wrong download (an HTML page) is caught here, not in convert_BFM.
if [[ $(head -c 10 "$weights/01_MorphableModel.mat" | tr -d '\0') != MATLAB* ]]; then
    echo "error: 01_MorphableModel.mat is not a MATLAB file (download it again)" >&2
    exit 1
fi

hash_ok() { # hash_ok FILE ALGORITHM:PREFIX
    local file=$1 check=$2 digest
    [[ $check == - || $verify == 0 ]] && return 0
    case ${check%%:*} in
        sha1) digest=$(sha1sum "$file") ;;
        sha256) digest=$(sha256sum "$file") ;;
        *) return 1 ;;
    esac
    [[ $digest == "${check#*:}"* ]]
}

present=()
for entry in "${REQUIRED[@]}" "${OPTIONAL[@]}"; do
    [[ -s "$weights/${entry%%|*}" ]] && present+=("$entry")
done
damaged=()
for entry in "${present[@]}"; do
    IFS='|' read -r name _ check _ _ <<<"$entry"
    hash_ok "$weights/$name" "$check" || damaged+=("  - $name (expected ${check})")
done
if ((${#damaged[@]})); then
    {
        echo "error: these files do not match the hash prefix in their names (wrong or damaged downloads):"
        printf '%s\n' "${damaged[@]}"
        echo "Download them again, or build with --build-arg VERIFY_WEIGHTS=0 to skip this check."
    } >&2
    exit 1
fi

for entry in "${present[@]}"; do
    IFS='|' read -r name destination _ _ _ <<<"$entry"
    mkdir -p "$stage/$destination"
    cp "$weights/$name" "$stage/$destination/$name"
    chmod 0644 "$stage/$destination/$name"
    echo "installed $name -> $destination/"
done

known=" README.md .gitignore "
for entry in "${REQUIRED[@]}" "${OPTIONAL[@]}"; do
    known+="${entry%%|*} "
done
for path in "$weights"/* "$weights"/.[!.]*; do
    [[ -e $path ]] || continue
    name=${path##*/}
    if [[ $known != *" $name "* ]]; then
        echo "ignored $name: not a file SyncTalk reads from weights/ (files shipped in the repository come from the clone)"
    fi
done
