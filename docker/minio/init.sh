#!/bin/sh
# One-shot set-up of the compose MinIO (service minio-init, image minio/mc): the media bucket, private, and
# the app's own MinIO user (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) allowed into that bucket only.
# Safe to run again: every step leaves what already exists as it is (a changed app secret is updated).
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${AWS_STORAGE_BUCKET_NAME:?}"
: "${AWS_ACCESS_KEY_ID:?}" "${AWS_SECRET_ACCESS_KEY:?}"
bucket=$AWS_STORAGE_BUCKET_NAME

mc alias set central "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "central/$bucket"
mc anonymous set none "central/$bucket" # people's faces and voices: signed links only

policy=/tmp/talkforge-media-policy.json
cat >"$policy" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::$bucket"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                 "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::$bucket/*"]
    }
  ]
}
JSON
mc admin policy create central talkforge-media "$policy"
mc admin user add central "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
if ! out=$(mc admin policy attach central talkforge-media --user "$AWS_ACCESS_KEY_ID" 2>&1); then
  case "$out" in
    *"already in effect"* | *"already attached"*) ;;
    *)
      echo "$out" >&2
      exit 1
      ;;
  esac
fi
echo "bucket $bucket and user $AWS_ACCESS_KEY_ID ready"
