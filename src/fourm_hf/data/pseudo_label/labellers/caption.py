"""``caption`` from an ``image-text-to-text`` pipeline (BLIP, GIT, VisionEncoderDecoder...)."""

from __future__ import annotations

from ..base import Labeller, _pipeline, check_model_task


class CaptionLabeller(Labeller):
    """``caption`` from an ``image-text-to-text`` pipeline (greedy decoding after ``prompt``)."""

    columns = ("caption",)
    task = "image-text-to-text"

    def __init__(self, model_id: str, device: str = "cpu", batch_size: int = 8, prompt: str = "", max_new_tokens: int = 30):
        check_model_task(model_id, "caption", self.task, ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",))
        self.model_id, self.batch_size, self.prompt, self.max_new_tokens = model_id, batch_size, prompt, int(max_new_tokens)
        self.pipeline = _pipeline(self.task, model_id, device)

    def features(self, size):
        from datasets import Value

        return {"caption": Value("string")}

    def label(self, images, labels):
        outputs = self.pipeline(
            images=images, text=[self.prompt] * len(images), batch_size=self.batch_size,
            max_new_tokens=self.max_new_tokens, generate_kwargs={"do_sample": False}, return_full_text=False,
        )
        captions = []
        for output in outputs:
            output = output[0] if isinstance(output, list) else output
            captions.append(str(output["generated_text"]).strip())
        return {"caption": captions}

    def metadata(self):
        return {"model": self.model_id, "task": self.task, "prompt": self.prompt, "max_new_tokens": self.max_new_tokens}
