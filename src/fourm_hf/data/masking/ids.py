"""Token ids and sample fields the masking relies on (the text tokenizer's special ids)."""

PAD_ID = 0
EOS_ID = 3
# Sentinel [S_i] has id SENTINEL_OFFSET + i; span masking uses [S_1], [S_2], ... (as 4M does).
SENTINEL_OFFSET = 4
# The reference 4M text tokenizer has 200 sentinels [S_0]..[S_199].
DEFAULT_NUM_SENTINELS = 200
IGNORE_INDEX = -100
SAMPLE_INDEX_FIELD = "sample_index"
PIXEL_VALUES_FIELD = "pixel_values"
