#!/usr/bin/env bash
# run_gaussiantalker.sh — GaussianTalker's command line: train | infer | evaluate | -h
#
# The prototype's CLI (xiaobai-cn21/TFG_ui_GaussianTalker @ 5b957d1, GaussianTalker/run_gaussiantalker.sh), same
# subcommands, flags and defaults, with its defects fixed:
#   * DeepSpeech features are extracted with `--input <wav> --output <npy>` (the prototype passed positional
#     paths, which upstream's argparse rejects);
#   * custom audio is first converted to mono 16 kHz 16-bit PCM (upstream reads it with scipy's wavfile,
#     keeps the first channel and casts the samples to int16: deepspeech_features.py:48-52, :150);
#   * the result is upstream's real file, output/<name>/custom/ours_<iter>/renders/
#     <P>_custom_<iter>iter_renders.mov with <P> the second-to-last component of --model_path
#     (render.py:139, `model_path.split("/")[-2]`), not output.mp4;
#   * --iterations takes effect: the --configs file overrides the flag (train.py:395-399 merges it over
#     the parsed arguments, utils/params_utils.py:1-9), so when the value
#     differs from the config's, a derived config (the chosen one with OptimizationParams.iterations
#     replaced, through mmcv's _base_ inheritance) is written next to the model and passed instead;
#   * without --au_csv, OpenFace runs only if the image has it; otherwise training stops with a note to use
#     Talkforge's EAR blink estimate (avatars/aucsv.py) as --au_csv;
#   * `--gpu` accepts only CPU or GPU<n> (the prototype silently used GPU 0 for anything else);
#   * containers get a large /dev/shm and open-file limit (the loaders run 32 workers: train.py:84, :87,
#     :130, render.py:58);
#   * process.py's exit status says nothing (its stages run through os.system and go on after a failure,
#     data_utils/process.py:24 and on): its outputs are checked before training;
#   * infer renders with the config the model was trained with (recorded at training), not always
#     64_dim_1_transformer.py;
#   * evaluate mounts its inputs read-only and passes the container's paths (the prototype mounted the whole
#     folder over the image's code and passed host paths), and fails on missing inputs.
#
# Two runtimes (GT_RUNTIME):
#   docker (default)  on a host: each step is `docker run --rm … gaussiantalker:latest <command>`, with
#                     ./GaussianTalker/{data,output} (GT_HOST_DIR) mounted at /GaussianTalker/{data,output};
#   local             inside the image (its ENTRYPOINT sets this) or in a bare checkout (GT_HOME): each step
#                     runs here; --gpu GPU<n> becomes CUDA_VISIBLE_DEVICES=<n>. Inside a container started
#                     with --gpus device=<n> the one visible GPU is GPU0. Here a first argument that is a
#                     program on PATH is run as is, so `docker run gaussiantalker:latest python render.py …`
#                     still works.
# TEST_MODE=1 prints each step's command as `[TEST_MODE] docker run …` instead of running it; the
# host-side checks, copies and the derived config still happen.
set -euo pipefail

IMAGE=${GT_IMAGE:-gaussiantalker:latest}
RUNTIME=${GT_RUNTIME:-docker}
TEST_MODE=${TEST_MODE:-0}
SHM_SIZE=${GT_SHM_SIZE:-16g}
NAME_RE='^[A-Za-z0-9_-]+$'
DEFAULT_CONFIG=arguments/64_dim_1_transformer.py
# OptimizationParams.iterations of the configs shipped at 8ec613b: arguments/64_dim_1_transformer.py:32,
# arguments/64_dim_2_transformer.py:33.
declare -A CONFIG_ITERATIONS=(
    [arguments/64_dim_1_transformer.py]=10000
    [arguments/64_dim_2_transformer.py]=10000
)

# The image keeps DeepSpeech's graph where upstream reads it, ~/.tensorflow/models (extract_ds_features.py:98
# sets '~/.tensorflow/models/deepspeech-0_1_0-b90017e8.pb'; deepspeech_store.py:16 downloads there when it is
# missing), under the image's HOME, /home/gaussiantalker. Talkforge runs containers as the node's user with
# HOME=/tmp (gpu_nodes/runtime.py), and so does this CLI: so the files of the image's HOME are linked into
# the HOME of the run first. A HOME this user cannot write becomes $TMPDIR (/tmp).
link_image_home() {
    local seed=${GT_IMAGE_HOME:-/home/gaussiantalker} file relative
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

case $RUNTIME in
    docker)
        WORKSPACE=/GaussianTalker # the code's folder inside the image
        GT_DIR=${GT_HOST_DIR:-./GaussianTalker}
        ;;
    local)
        WORKSPACE=${GT_HOME:-/GaussianTalker}
        GT_DIR=$WORKSPACE
        export PYTHONUNBUFFERED=1
        link_image_home
        ;;
    *)
        echo "error: GT_RUNTIME must be docker or local, not '$RUNTIME'" >&2
        exit 1
        ;;
esac

usage() {
    local me
    me=$(basename "$0")
    cat <<EOF
Usage: $me <train|infer|evaluate|-h> [options]

  train     preprocess a video (data_utils/process.py) and train a model (train.py)
            --video_path FILE   the training video (required); its name without extension names the model
            --gpu GPU0|GPU1|…|CPU   (default GPU0)
            --iterations N      fine-stage iterations (default 10000)
            --config FILE       mmcv config inside the image (default $DEFAULT_CONFIG)
            --au_csv FILE       OpenFace blink file (column ' AU45_r'); otherwise OpenFace runs if present
  infer     render the model speaking an audio file (render.py, custom audio)
            --model_dir NAME    the trained model's name (required)
            --audio_path FILE   any audio ffmpeg reads (required); converted to mono 16 kHz PCM
            --gpu GPU0|GPU1|…|CPU   (default GPU0)
            --batch_size N      render batch (default 128)
            --iteration N       saved iteration to load, -1 = latest (default 10000)
  evaluate  PSNR/SSIM of a rendered video against the dataset's gt_imgs/ (evaluate.py)
            --generated_video FILE  (required)
            --data_dir DIR      the dataset folder, e.g. GaussianTalker/data/<name> (required)
            --output_json FILE  also write {psnr, ssim, num_frames} there

Names (file names without extension) may use letters, digits, '_' and '-' only.
Environment: GT_RUNTIME=docker|local, GT_HOST_DIR (default ./GaussianTalker), GT_IMAGE
(default gaussiantalker:latest), GT_SHM_SIZE (default 16g), TEST_MODE=1 (print, do not run).

Examples:
  $me train --video_path ./obama.mp4 --gpu GPU0 --iterations 10000
  $me train --video_path ./obama.mp4 --gpu GPU1 --au_csv ./au.csv
  $me infer --model_dir obama --audio_path speech.wav --gpu GPU0 --batch_size 128 --iteration 10000
  $me evaluate --generated_video ./GaussianTalker/output/obama/test/ours_10000/renders/output_test_10000iter_renders.mov \\
      --data_dir ./GaussianTalker/data/obama --output_json results.json
EOF
}

die() {
    echo "error: $*" >&2
    exit 1
}

usage_error() {
    echo "error: $*" >&2
    usage >&2
    exit 1
}

# A flag's value: `value_of FLAG "$@"` fails with a usage error when the value is missing.
need_value() {
    if [[ $# -lt 2 || $2 == --* ]]; then
        usage_error "$1 needs a value"
    fi
}

stem_of() {
    local base
    base=$(basename -- "$1")
    echo "${base%.*}"
}

check_name() { # check_name WHAT NAME
    [[ $2 =~ $NAME_RE ]] || die "$1 '$2' may use only letters, digits, '_' and '-' (it names folders and files)"
}

check_positive() { # check_positive FLAG VALUE
    [[ $2 =~ ^[1-9][0-9]{0,8}$ ]] || die "$1 must be a positive whole number, not '$2'"
}

check_config() {
    local config=$1
    [[ $config =~ ^[A-Za-z0-9_./-]+\.py$ && ! $config =~ (^|/)\.\.(/|$) ]] ||
        die "--config must be a .py path inside the image such as $DEFAULT_CONFIG, not '$config'"
    if [[ $RUNTIME == local ]]; then
        [[ -f $(config_path "$config") ]] || die "config not found: $(config_path "$config")"
    fi
}

config_path() { # the config as train.py/render.py see it (absolute)
    if [[ $1 == /* ]]; then echo "$1"; else echo "$WORKSPACE/${1#./}"; fi
}

# --gpu: CPU → no GPU; GPU<n> → docker --gpus device=<n> / CUDA_VISIBLE_DEVICES=<n>.
GPU_DOCKER=()
GPU_ENV=()
parse_gpu() {
    local upper=${1^^}
    GPU_DOCKER=()
    GPU_ENV=()
    if [[ $upper == CPU ]]; then
        GPU_ENV=(CUDA_VISIBLE_DEVICES=)
        echo "note: GaussianTalker's training and rendering need CUDA (its code uses cuda:0); on CPU" \
            "those steps fail" >&2
    elif [[ $upper =~ ^GPU([0-9]{1,3})$ ]]; then
        local index=$((10#${BASH_REMATCH[1]}))
        GPU_DOCKER=(--gpus "device=$index")
        GPU_ENV=("CUDA_VISIBLE_DEVICES=$index")
    else
        die "--gpu must be CPU or GPU<n> (GPU0, GPU1, …), not '$1'"
    fi
}

absolute() { # absolute PATH (the folder must exist)
    local dir base
    dir=$(dirname -- "$1")
    base=$(basename -- "$1")
    dir=$(cd -- "$dir" && pwd -P) || die "folder not found: $(dirname -- "$1")"
    if [[ $base == . ]]; then echo "$dir"; else echo "${dir%/}/$base"; fi
}

mountable() { # docker -v splits on ':'
    [[ $1 != *:* ]] || die "a path given to docker cannot contain ':': $1"
}

# Folders: host side (HOST_*) and as the engine sees them (C_*).
setup_dirs() {
    mkdir -p -- "$GT_DIR/data" "$GT_DIR/output"
    local root
    root=$(absolute "$GT_DIR")
    HOST_DATA=$root/data
    HOST_OUTPUT=$root/output
    if [[ $RUNTIME == docker ]]; then
        mountable "$root"
        C_DATA=$WORKSPACE/data
        C_OUTPUT=$WORKSPACE/output
    else
        C_DATA=$HOST_DATA
        C_OUTPUT=$HOST_OUTPUT
    fi
}

quote() { # shell-quote each argument (as Python's shlex.quote does)
    local out=() arg
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
            out+=("$arg")
        else
            out+=("'${arg//\'/\'\"\'\"\'}'")
        fi
    done
    echo "${out[*]}"
}

# engine_run [--gpu] [--mount HOST:CONTAINER[:ro]]... -- COMMAND...
engine_run() {
    local use_gpu=0 mounts=()
    while [[ $1 != -- ]]; do
        case $1 in
            --gpu) use_gpu=1 && shift ;;
            --mount) mounts+=(-v "$2") && shift 2 ;;
            *) die "engine_run: unknown option $1" ;;
        esac
    done
    shift
    local argv
    if [[ $RUNTIME == docker ]]; then
        # As the caller (data/ and output/ stay theirs), HOME in the container's /tmp (link_image_home).
        argv=(docker run --rm --user "$(id -u):$(id -g)" -e HOME=/tmp --shm-size="$SHM_SIZE"
            --ulimit nofile=65535:65535)
        if ((use_gpu)); then argv+=("${GPU_DOCKER[@]}"); fi
        argv+=("${mounts[@]}" "$IMAGE" "$@")
    else
        argv=()
        if ((use_gpu)) && ((${#GPU_ENV[@]})); then argv=(env "${GPU_ENV[@]}"); fi
        argv+=("$@")
    fi
    if [[ $TEST_MODE == 1 ]]; then
        echo "[TEST_MODE] $(quote "${argv[@]}")"
        return 0
    fi
    if [[ $RUNTIME == docker ]]; then
        "${argv[@]}"
    else
        (cd -- "$WORKSPACE" && "${argv[@]}")
    fi
}

# latest_iteration MODEL_DIR → the highest N of point_cloud/iteration_N (the fine stage's saves,
# scene/__init__.py:91; coarse saves are point_cloud/coarse_iteration_N, :88, and never rendered).
latest_iteration() {
    local best=-1 dir n
    for dir in "$1"/point_cloud/iteration_*; do
        n=${dir##*_}
        [[ -d $dir && $n =~ ^[0-9]+$ ]] && ((n > best)) && best=$n
    done
    ((best >= 0)) && echo "$best"
}

check_au_csv() { # the header must have OpenFace's ' AU45_r' (leading space): talking_dataset_readers.py:360
    local header columns column
    IFS= read -r header <"$1" || true
    header=${header%$'\r'}
    IFS=, read -r -a columns <<<"$header"
    for column in "${columns[@]}"; do
        [[ $column == " AU45_r" ]] && return 0
    done
    for column in "${columns[@]}"; do
        if [[ ${column// /} == AU45_r ]]; then
            die "$1 has an AU45_r column without the leading space GaussianTalker reads (' AU45_r'):" \
                "give OpenFace's file unchanged"
        fi
    done
    die "$1 has no ' AU45_r' column: it must be OpenFace FeatureExtraction's CSV"
}

# process.py goes on after a failing stage (os.system, data_utils/process.py:24): check what training reads:
# aud_ds.npy (talking_dataset_readers.py:345, copied from aud.npy by process.py:53), bc.jpg (:230),
# track_params.pt (:364), transforms_train/val.json (:368, :370), and the folders process.py:390-393 names.
check_preprocessed() {
    local dir=$1 missing=() item
    for item in aud.wav aud_ds.npy bc.jpg track_params.pt transforms_train.json transforms_val.json; do
        [[ -s $dir/$item ]] || missing+=("$item")
    done
    for item in ori_imgs gt_imgs parsing torso_imgs; do
        [[ -d $dir/$item ]] || missing+=("$item/")
    done
    if ((${#missing[@]})); then
        die "preprocessing did not produce: ${missing[*]} (in $dir). process.py does not stop when a" \
            "stage fails: the first error in its output above is the cause (a frame without a face, a" \
            "missing pretrained file, …)."
    fi
}

# The OpenFace step, run inside the image: $1 folder, $2 video file, $3 name.
# shellcheck disable=SC2016 # expanded by the container's bash, from its positional arguments
OPENFACE_SCRIPT='if command -v FeatureExtraction >/dev/null 2>&1; then cd "$1" && FeatureExtraction -f "$2" -out_dir . && mv -f -- "$3.csv" au.csv; else echo "note: OpenFace (FeatureExtraction) is not in this image: no au.csv was made" >&2; fi'

train() {
    local video_path="" gpu=GPU0 iterations=10000 config=$DEFAULT_CONFIG au_csv=""
    while [[ $# -gt 0 ]]; do
        case $1 in
            --video_path) need_value "$@" && video_path=$2 && shift 2 ;;
            --gpu) need_value "$@" && gpu=$2 && shift 2 ;;
            --iterations) need_value "$@" && iterations=$2 && shift 2 ;;
            --config) need_value "$@" && config=$2 && shift 2 ;;
            --au_csv) need_value "$@" && au_csv=$2 && shift 2 ;;
            *) usage_error "unknown option for train: $1" ;;
        esac
    done
    [[ -n $video_path ]] || usage_error "train needs --video_path"
    [[ -f $video_path ]] || die "video not found: $video_path"
    local name file ext
    name=$(stem_of "$video_path")
    check_name "video file name" "$name"
    file=$(basename -- "$video_path")
    ext=${file##*.}
    [[ $file == *.* && $ext =~ ^[A-Za-z0-9]{1,8}$ ]] || die "the video file needs an extension such as .mp4: $file"
    check_positive --iterations "$iterations"
    check_config "$config"
    parse_gpu "$gpu"
    if [[ -n $au_csv ]]; then
        [[ -f $au_csv ]] || die "au.csv not found: $au_csv"
        check_au_csv "$au_csv"
    fi
    setup_dirs
    local data_dir=$HOST_DATA/$name out_dir=$HOST_OUTPUT/$name
    mkdir -p -- "$data_dir" "$out_dir"
    if [[ $(absolute "$video_path") != "$data_dir/$name.$ext" ]]; then
        cp -- "$video_path" "$data_dir/$name.$ext"
    fi
    if [[ -n $au_csv ]]; then
        cp -- "$au_csv" "$data_dir/au.csv"
    fi

    echo "GaussianTalker training: $name"
    echo "  video: $data_dir/$name.$ext"
    echo "  model: $out_dir"
    echo "  gpu: $gpu, iterations: $iterations, config: $config"

    echo "===== step 1: preprocessing (data_utils/process.py) ====="
    # README.md:72; process.py:381 takes the video's path, outputs go next to it (:389-393).
    engine_run --gpu --mount "$HOST_DATA:$C_DATA" -- \
        python data_utils/process.py "$C_DATA/$name/$name.$ext"
    if [[ $TEST_MODE != 1 ]]; then
        check_preprocessed "$data_dir"
    fi

    if [[ -z $au_csv ]]; then
        echo "===== step 2: blinks (au.csv from OpenFace, if the image has it) ====="
        engine_run --mount "$HOST_DATA:$C_DATA" -- \
            bash -c "$OPENFACE_SCRIPT" openface "$C_DATA/$name" "$name.$ext" "$name"
        if [[ $TEST_MODE != 1 && ! -f $data_dir/au.csv ]]; then
            die "no au.csv: GaussianTalker reads its ' AU45_r' column (eye blinks) and OpenFace is not" \
                "available. Use Talkforge's EAR estimate (it writes au.csv from the landmarks in" \
                "$data_dir/ori_imgs), or run OpenFace yourself, and pass the file with --au_csv."
        fi
    fi

    local configs=$config known=${CONFIG_ITERATIONS[${config#./}]:-}
    if [[ $known != "$iterations" ]]; then
        # --configs overrides --iterations (train.py:395-399): write the chosen config with the requested value.
        local derived_name="config_iterations_$iterations.py"
        cat >"$out_dir/$derived_name" <<EOF
# Written by run_gaussiantalker.sh: $config with OptimizationParams.iterations = $iterations.
# train.py's --configs file overrides its --iterations flag (train.py:395-399), so the value goes here.
# mmcv loads _base_ first and merges this file's dicts into it: everything else is the chosen config.
_base_ = "$(config_path "$config")"
OptimizationParams = dict(iterations=$iterations)
EOF
        configs=$C_OUTPUT/$name/$derived_name
        if [[ -n $known ]]; then
            echo "  --iterations $iterations differs from the $known of $config: training with $configs"
        else
            echo "  $config is not a shipped config: training with $configs to apply --iterations $iterations"
        fi
    fi
    echo "$config" >"$out_dir/train_config.txt" # infer renders with the same architecture

    echo "===== step 3: training (train.py) ====="
    # README.md:122 (train.py -s … --model_path … --configs …); train.py:391 --configs.
    engine_run --gpu --mount "$HOST_DATA:$C_DATA" --mount "$HOST_OUTPUT:$C_OUTPUT" -- \
        python train.py -s "$C_DATA/$name" --model_path "$C_OUTPUT/$name" --configs "$configs" \
        --iterations "$iterations"
    if [[ $TEST_MODE != 1 ]]; then
        local latest
        latest=$(latest_iteration "$out_dir") || die "train.py saved no point_cloud/iteration_* in $out_dir"
        echo "GaussianTalker training finished: $out_dir (latest saved iteration: $latest)"
    fi
}

infer() {
    local model_dir="" audio_path="" gpu=GPU0 batch_size=128 iteration=10000
    while [[ $# -gt 0 ]]; do
        case $1 in
            --model_dir) need_value "$@" && model_dir=$2 && shift 2 ;;
            --audio_path) need_value "$@" && audio_path=$2 && shift 2 ;;
            --gpu) need_value "$@" && gpu=$2 && shift 2 ;;
            --batch_size) need_value "$@" && batch_size=$2 && shift 2 ;;
            --iteration) need_value "$@" && iteration=$2 && shift 2 ;;
            *) usage_error "unknown option for infer: $1" ;;
        esac
    done
    [[ -n $model_dir ]] || usage_error "infer needs --model_dir"
    [[ -n $audio_path ]] || usage_error "infer needs --audio_path"
    local name stem
    name=$(basename -- "$model_dir")
    check_name "model name" "$name"
    [[ -f $audio_path ]] || die "audio not found: $audio_path"
    stem=$(stem_of "$audio_path")
    check_name "audio file name" "$stem"
    check_positive --batch_size "$batch_size"
    [[ $iteration == -1 ]] || check_positive --iteration "$iteration"
    parse_gpu "$gpu"
    setup_dirs
    local data_dir=$HOST_DATA/$name out_dir=$HOST_OUTPUT/$name
    [[ -d $data_dir ]] || die "no dataset $data_dir: train '$name' first"
    [[ -d $out_dir ]] || die "no model $out_dir: train '$name' first"
    # cfg_args: written by train.py:298, read back by render.py through arguments/__init__.py:171.
    [[ -f $out_dir/cfg_args ]] || die "$out_dir has no cfg_args (train.py writes it; render.py needs it)"
    if [[ $iteration == -1 ]]; then
        iteration=$(latest_iteration "$out_dir") || die "$out_dir has no saved point_cloud/iteration_*"
    fi
    if [[ ! -d $out_dir/point_cloud/iteration_$iteration ]]; then
        local saved
        saved=$(cd -- "$out_dir" && compgen -G "point_cloud/iteration_*" | sed 's/.*_//' | sort -n | tr '\n' ' ' || true)
        saved=${saved% }
        die "$out_dir has no saved iteration $iteration (saved: ${saved:-none}); use --iteration"
    fi
    local config=$DEFAULT_CONFIG
    if [[ -f $out_dir/train_config.txt ]]; then
        config=$(head -n 1 "$out_dir/train_config.txt")
        check_config "$config"
    fi

    local audio_dir=$data_dir/custom_audio c_audio=$C_DATA/$name/custom_audio
    mkdir -p -- "$audio_dir"
    rm -f -- "$audio_dir/$stem.wav" "$audio_dir/$stem.npy"
    cp -- "$audio_path" "$audio_dir/$stem.input"

    local model_path=$C_OUTPUT/$name prefix
    # render.py:49 writes <model_path>/custom/ours_<iteration>/renders/, and :139 names the video after
    # model_path.split("/")[-2]: <P>_custom_<iteration>iter_renders.mov.
    prefix=$(basename -- "$(dirname -- "$model_path")")
    local result=$out_dir/custom/ours_$iteration/renders/${prefix}_custom_${iteration}iter_renders.mov

    echo "GaussianTalker inference: $name speaking $(basename -- "$audio_path")"
    echo "  gpu: $gpu, batch size: $batch_size, iteration: $iteration, config: $config"

    echo "===== step 1: audio to mono 16 kHz 16-bit PCM (ffmpeg) ====="
    engine_run --mount "$HOST_DATA:$C_DATA" -- \
        ffmpeg -nostdin -hide_banner -loglevel error -y -i "$c_audio/$stem.input" \
        -vn -ac 1 -ar 16000 -c:a pcm_s16le "$c_audio/$stem.wav"

    echo "===== step 2: DeepSpeech features ====="
    # extract_ds_features.py:25 --input, :30 --output (the prototype passed them positionally).
    engine_run --mount "$HOST_DATA:$C_DATA" -- \
        python data_utils/deepspeech_features/extract_ds_features.py \
        --input "$c_audio/$stem.wav" --output "$c_audio/$stem.npy"
    if [[ $TEST_MODE != 1 && ! -s $audio_dir/$stem.npy ]]; then
        die "DeepSpeech features were not written: $audio_dir/$stem.npy"
    fi

    echo "===== step 3: rendering (render.py) ====="
    # README.md:139; render.py:214 --iteration, :220 --batch (required), :221-222 --custom_aud/--custom_wav
    # (joined to -s, so relative to the dataset), :215-216 --skip_train/--skip_test.
    if [[ $TEST_MODE != 1 ]]; then
        rm -f -- "$result" # a stale result must not pass for this one
    fi
    engine_run --gpu --mount "$HOST_DATA:$C_DATA" --mount "$HOST_OUTPUT:$C_OUTPUT" -- \
        python render.py -s "$C_DATA/$name" --model_path "$model_path" --configs "$config" \
        --iteration "$iteration" --batch "$batch_size" \
        --custom_aud "custom_audio/$stem.npy" --custom_wav "custom_audio/$stem.wav" --skip_train --skip_test
    if [[ $TEST_MODE == 1 ]]; then
        echo "[TEST_MODE] expected result: $result"
        return 0
    fi
    [[ -f $result ]] || die "render.py finished but $result is missing; see its output above"
    echo "GaussianTalker inference finished"
    echo "Output video: $result"
}

evaluate() {
    local generated_video="" data_dir="" output_json=""
    while [[ $# -gt 0 ]]; do
        case $1 in
            --generated_video) need_value "$@" && generated_video=$2 && shift 2 ;;
            --data_dir) need_value "$@" && data_dir=$2 && shift 2 ;;
            --output_json) need_value "$@" && output_json=$2 && shift 2 ;;
            *) usage_error "unknown option for evaluate: $1" ;;
        esac
    done
    [[ -n $generated_video ]] || usage_error "evaluate needs --generated_video"
    [[ -n $data_dir ]] || usage_error "evaluate needs --data_dir"
    [[ -f $generated_video ]] || die "generated video not found: $generated_video"
    [[ -d $data_dir ]] || die "dataset folder not found: $data_dir"
    [[ -f $data_dir/transforms_val.json ]] || die "$data_dir has no transforms_val.json (preprocess it first)"
    [[ -d $data_dir/gt_imgs ]] || die "$data_dir has no gt_imgs/ (preprocess it first)"
    local video data json=""
    video=$(absolute "$generated_video")
    data=$(absolute "$data_dir")
    if [[ -n $output_json ]]; then
        mkdir -p -- "$(dirname -- "$output_json")"
        json=$(absolute "$output_json")
    fi

    echo "GaussianTalker evaluation: $video against $data"
    if [[ $RUNTIME == local ]]; then
        local argv=(python "$WORKSPACE/evaluate.py" --generated_video "$video" --data_dir "$data")
        if [[ -n $json ]]; then argv+=(--output_json "$json"); fi
        engine_run -- "${argv[@]}"
        return 0
    fi
    local mounts=(--mount "$(dirname -- "$video"):/eval/video:ro" --mount "$data:/eval/data:ro")
    local argv=(python "$WORKSPACE/evaluate.py" --generated_video "/eval/video/$(basename -- "$video")"
        --data_dir /eval/data)
    mountable "$video"
    mountable "$data"
    if [[ -n $json ]]; then
        mountable "$json"
        mounts+=(--mount "$(dirname -- "$json"):/eval/out")
        argv+=(--output_json "/eval/out/$(basename -- "$json")")
    fi
    engine_run "${mounts[@]}" -- "${argv[@]}"
}

main() {
    if [[ $# -eq 0 ]]; then
        usage >&2
        exit 1
    fi
    case $1 in
        train | infer | evaluate)
            local command=$1
            shift
            "$command" "$@"
            ;;
        -h | --help | help)
            usage
            ;;
        *)
            # Inside the image the ENTRYPOINT is this script: let `docker run IMAGE python …` through.
            if [[ $RUNTIME == local ]] && command -v -- "$1" >/dev/null 2>&1; then
                exec "$@"
            fi
            usage_error "unknown command '$1' (use train, infer, evaluate or -h)"
            ;;
    esac
}

main "$@"
