#!/usr/bin/env bash
# Check the pretrained files of the build context's weights/ folder and lay them out where GaussianTalker
# and its libraries read them, under STAGE (the Dockerfile copies STAGE's trees into the image):
#
#   STAGE/gaussiantalker/data_utils/face_parsing/79999_iter.pth             read by face_parsing/test.py
#   STAGE/gaussiantalker/data_utils/face_tracking/3DMM/01_MorphableModel.mat  → convert_BFM.py at build
#   STAGE/home/.tensorflow/models/deepspeech-0_1_0-b90017e8.pb              $HOME/.tensorflow/models
#   STAGE/torch/hub/checkpoints/<file>                                      $TORCH_HOME/hub/checkpoints
#
#   install_weights.sh WEIGHTS_DIR STAGE
#
# A missing required file stops the build at once, with one line per missing file saying where to get
# it. Files whose names carry a hash prefix are checked against it (VERIFY_WEIGHTS=0 skips that).
# Nothing is ever downloaded: the image must run without network access.
set -euo pipefail

# Where upstream reads each (GaussianTalker 8ec613b):
#   79999_iter.pth                data_utils/face_parsing/test.py:96 (--modelpath default; process.py:69 runs it)
#   01_MorphableModel.mat         data_utils/face_tracking/convert_BFM.py:4 (run at build time, README.md:66-70)
#   deepspeech-0_1_0-b90017e8.pb  data_utils/deepspeech_features/extract_ds_features.py:98 (~/.tensorflow/models),
#                                 deepspeech_store.py:32
#   resnet18-5c106cde.pth         data_utils/face_parsing/resnet.py:11 (model_zoo.load_url at :83)
#   vgg16-397923af.pth            utils/loss_utils.py:74-77 (built at import by train.py:44)
#   s3fd-619a316812.pth, 2DFAN4-cd938726ad.zip  face_alignment 1.4.1, built by data_utils/process.py:80-82
# name|destination (under STAGE)|hash check (algorithm:prefix, or -)|where to get it|where upstream reads it
# (file:line or file:first-last, comma-separated; tests/docker/test_engine_image.py checks each cited place)
REQUIRED=(
    "79999_iter.pth|gaussiantalker/data_utils/face_parsing|-|BiSeNet face parsing (face-parsing.PyTorch), as linked in GaussianTalker's README|data_utils/face_parsing/test.py:96"
    "01_MorphableModel.mat|gaussiantalker/data_utils/face_tracking/3DMM|-|Basel Face Model 2009 (faces.dmi.unibas.ch, licence required)|data_utils/face_tracking/convert_BFM.py:4"
    "deepspeech-0_1_0-b90017e8.pb|home/.tensorflow/models|sha1:b90017e8|osmr/deepspeech_features release v0.0.1 (deepspeech-0_1_0-b90017e8.pb.zip, unzipped)|data_utils/deepspeech_features/extract_ds_features.py:98,data_utils/deepspeech_features/deepspeech_store.py:32"
    "resnet18-5c106cde.pth|torch/hub/checkpoints|sha256:5c106cde|download.pytorch.org/models/resnet18-5c106cde.pth (face parsing backbone)|data_utils/face_parsing/resnet.py:11"
    "vgg16-397923af.pth|torch/hub/checkpoints|sha256:397923af|download.pytorch.org/models/vgg16-397923af.pth (train.py's VGG perceptual loss)|utils/loss_utils.py:74-77"
    "s3fd-619a316812.pth|torch/hub/checkpoints|-|face_alignment 1.4.1 face detector: adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth|data_utils/process.py:80-82"
    "2DFAN4-cd938726ad.zip|torch/hub/checkpoints|-|face_alignment 1.4.1 landmarks (torch 2.0): adrianbulat.com/downloads/python-fan/2DFAN4-cd938726ad.zip|data_utils/process.py:80-82"
)
# Used only if present: LPIPS's AlexNet backbone (lpips is imported by train.py; its AlexNet weights are
# fetched by torchvision the first time an LPIPS(net='alex') model is built).
OPTIONAL=(
    "alexnet-owt-7be5be79.pth|torch/hub/checkpoints|sha256:7be5be79|download.pytorch.org/models/alexnet-owt-7be5be79.pth|-"
)
# Listed by the prototype, but no GaussianTalker code reads them (`git grep` at 8ec613b finds none): accepted and
# left out.
UNUSED=(epoch_20.pth resnet50-19c8e357.pth resnet50-0676ba61.pth resnet50.pth shape_predictor_68_face_landmarks.dat)

if [[ $# -ne 2 ]]; then
    echo "usage: install_weights.sh WEIGHTS_DIR STAGE" >&2
    exit 2
fi
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
        echo "error: required pretrained files are missing from docker/engines/gaussiantalker/weights/:"
        printf '%s\n' "${missing[@]}"
        echo "Put them there (see docker/engines/gaussiantalker/README.md) and build again."
    } >&2
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

install_entry() { # install_entry ENTRY
    local name destination
    IFS='|' read -r name destination _ _ _ <<<"$1"
    mkdir -p "$stage/$destination"
    cp "$weights/$name" "$stage/$destination/$name"
    chmod 0644 "$stage/$destination/$name"
    echo "installed $name -> $destination/"
}

# 01_MorphableModel.mat is a MATLAB file: a wrong download (an HTML page) is caught here, not in convert_BFM.
if [[ $(head -c 10 "$weights/01_MorphableModel.mat" | tr -d '\0') != MATLAB* ]]; then
    echo "error: 01_MorphableModel.mat is not a MATLAB file (download it again)" >&2
    exit 1
fi

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
    install_entry "$entry"
done
for entry in "${OPTIONAL[@]}"; do
    name=${entry%%|*}
    [[ -s "$weights/$name" ]] || echo "optional $name not given: LPIPS(net='alex') would download it on first use"
done

known=" README.md .gitignore ${UNUSED[*]} "
for entry in "${REQUIRED[@]}" "${OPTIONAL[@]}"; do
    known+="${entry%%|*} "
done
for path in "$weights"/* "$weights"/.[!.]*; do
    [[ -e $path ]] || continue
    name=${path##*/}
    for unused in "${UNUSED[@]}"; do
        if [[ $name == "$unused" ]]; then
            echo "ignored $name: GaussianTalker does not use it (no code at 8ec613b reads it)"
        fi
    done
    if [[ $known != *" $name "* ]]; then
        echo "ignored $name: not a file GaussianTalker reads"
    fi
done
