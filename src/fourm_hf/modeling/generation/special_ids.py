"""Text ids the sampler relies on (the 4M text tokenizer layout: 0 ``[PAD]``, 3 ``[EOS]``,
``[S_i]`` = 4 + i for i < 200)."""

PAD_ID = 0
EOS_ID = 3
FIRST_SENTINEL_ID = 4  # [S_0]
NUM_SENTINELS = 200
START_SENTINEL_ID = 5  # [S_1]: the encoder marks the missing text with it, the decoder starts from it
END_SENTINEL_ID = 6  # [S_2]: closes the span, i.e. the end of the generated text
