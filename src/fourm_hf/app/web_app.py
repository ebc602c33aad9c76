"""The Gradio app of ``fourm-hf demo --web`` (and of the Space in ``examples/space/app.py``).

Two tabs over one :class:`~fourm_hf.app.web_session.WebDemoSession`:

* **RGB -> all**: upload an image (or pick a bundled held-out scene / scikit-image photograph), tick
  the targets, get depth (colour map), normals, segmentation (with a legend), boxes (drawn, and as a
  table) and a caption.
* **Caption -> RGB**: type a caption (and optionally a negative prompt, a caption to steer away
  from), pick the targets (RGB by default, any other too) and the guidance scale.

Only the panels of the targets asked for are shown (``WebDemoSession.views`` names them); box scores are
the mean probability of each box's generated tokens. "Advanced settings" (steps, temperatures, top-k/top-p,
seed) apply to both. Bad inputs show a
message (``gr.Error``), never a stack trace. Gradio is imported here only: nothing else in the
package imports this module unless ``--web`` is given. Analytics are off, no share link is made and
the theme uses the system's fonts, so the app reaches no network when it starts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image

from ..data.photos import load_photos
from ..evaluation.heldout import heldout_scenes
from .web_session import BOX_COLUMNS, MIN_IMAGE_SIDE, DecodingSettings, WebDemoSession, shown_panels

INSTALL_HINT = 'the web demo needs Gradio: pip install -e ".[web]" (or pip install "gradio>=5,<7")'
NUM_EXAMPLE_SCENES = 4
EXAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"]
SYSTEM_MONO_FONTS = ["ui-monospace", "Consolas", "monospace"]
# Small images (the 64 px scenes) fill their box, with sharp pixels.
CSS = "#rgb_input img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"
OUTPUT_LABELS = {"depth": "depth", "normal": "surface normals", "semseg": "segmentation", "det": "boxes",
                 "rgb": "RGB"}


def import_gradio():
    """Gradio, with analytics off; an ImportError with the install command when it is missing."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return gradio


def write_examples(folder, image_size: int) -> dict:
    """Example inputs as PNG files in ``folder``: held-out scenes (never trained on) at the model's size,
    the scikit-image photographs and the scenes' true captions. Returns ``{"images": [...], "captions": [...]}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, captions = [], []
    for index, scene in enumerate(heldout_scenes(NUM_EXAMPLE_SCENES, image_size)):
        path = folder / f"heldout_scene_{index}.png"
        Image.fromarray(scene["rgb"]).save(path)
        images.append(str(path))
        captions.append(scene["caption"])
    try:
        photos = {photo["name"]: photo["image"] for photo in load_photos()}
    except ImportError:  # scikit-image is the "demo" extra; without it, scenes only
        photos = {}
    for name in EXAMPLE_PHOTOS:
        if name in photos:
            path = folder / f"photo_{name}.png"
            photos[name].save(path)
            images.append(str(path))
    return {"images": images, "captions": captions}


def build_app(checkpoint=None, session: WebDemoSession | None = None, examples_dir=None):
    """The ``gr.Blocks`` app (not launched). ``checkpoint``: folder or Hub repo id (default: bundled)."""
    gr = import_gradio()
    session = session or WebDemoSession(checkpoint)
    scratch = tempfile.TemporaryDirectory(prefix="fourm_web_examples_") if examples_dir is None else None
    examples_dir = Path(scratch.name if scratch is not None else examples_dir)  # scratch: removed at exit
    examples = write_examples(examples_dir, session.pipe.processor.image_size)

    with gr.Blocks(title="4M any-to-any", analytics_enabled=False) as app:
        gr.Markdown(f"# 4M any-to-any\nCheckpoint `{session.checkpoint}`: one model that turns any of its "
                    f"modalities into the others ({', '.join(session.targets)}). Images are centre-cropped to a "
                    "square and resized to the model's size.")
        with gr.Accordion("Advanced settings", open=False, elem_id="advanced"):
            with gr.Row():
                steps = gr.Slider(1, 32, value=8, step=1, label="image decoding steps", elem_id="steps")
                seed = gr.Number(value=0, precision=0, minimum=0, label="seed", elem_id="seed")
                top_k = gr.Number(value=0, precision=0, minimum=0, label="top-k (0 = off)", elem_id="top_k")
            with gr.Row():
                image_temperature = gr.Slider(0.05, 4.0, value=2.0, step=0.05, label="image temperature")
                image_top_p = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="image top-p (0 = off)")
                text_temperature = gr.Slider(0.05, 2.0, value=0.3, step=0.05, label="text temperature")
                text_top_p = gr.Slider(0.0, 1.0, value=0.8, step=0.05, label="text top-p (0 = off)")
        settings_inputs = [steps, image_temperature, image_top_p, text_temperature, text_top_p, top_k, seed]

        with gr.Tab("RGB -> all", elem_id="tab_rgb"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(type="filepath", label=f"input image (at least {MIN_IMAGE_SIDE} px)",
                                     elem_id="rgb_input", sources=["upload"], height=256)
                    _answer_unreadable_files(gr, image)
                    rgb_targets = gr.CheckboxGroup(session.image_targets, value=session.image_targets,
                                                   label="targets", elem_id="rgb_targets")
                    rgb_button = gr.Button("Generate", variant="primary", elem_id="rgb_run")
                    gr.Examples(examples["images"], inputs=[image], label="held-out scenes and photographs",
                                elem_id="rgb_examples")
                rgb_outputs = _output_panel(gr, [n for n in ("depth", "normal", "semseg", "det") if n in session.targets],
                                            "rgb", shown=shown_panels(session.image_targets))

        with gr.Tab("Caption -> RGB", elem_id="tab_caption"):
            with gr.Row():
                with gr.Column(scale=1):
                    caption = gr.Textbox(label="caption", lines=2, elem_id="caption_input",
                                         placeholder="a red cube in front of a blue sphere.")
                    caption_choices = [name for name in session.targets if name != "caption"]
                    caption_targets = gr.CheckboxGroup(caption_choices, value=["rgb"], label="targets",
                                                       elem_id="caption_targets")
                    negative = gr.Textbox(label="negative prompt (optional: a caption to steer away from)", lines=1,
                                          elem_id="negative_prompt", placeholder="a red cube.")
                    guidance = gr.Slider(-3.0, 6.0, value=2.0, step=0.5, elem_id="guidance",
                                         label="guidance scale (1 = off; > 1 follows the caption more closely; "
                                               "< 0 steers away from it)")
                    caption_button = gr.Button("Generate", variant="primary", elem_id="caption_run")
                    gr.Examples([[text] for text in examples["captions"]], inputs=[caption], label="held-out captions")
                caption_outputs = _output_panel(gr, [n for n in ("rgb", "depth", "normal", "semseg", "det")
                                                     if n in caption_choices], "caption", shown=shown_panels(["rgb"]))

        # Every input is a named positional parameter: Gradio finds the gr.Progress (which mirrors the
        # pipeline's tqdm bar over decoding steps) only among those, not after *args.
        def run_rgb(path, targets, steps, image_temperature, image_top_p, text_temperature, text_top_p, top_k, seed,
                    progress=gr.Progress(track_tqdm=True)):
            settings = _settings(steps, image_temperature, image_top_p, text_temperature, text_top_p, top_k, seed)
            return _run(gr, lambda: session.rgb_to_targets(path, targets, settings, progress=True), rgb_outputs)

        def run_caption(text, negative_text, targets, scale, steps, image_temperature, image_top_p, text_temperature,
                        text_top_p, top_k, seed, progress=gr.Progress(track_tqdm=True)):
            settings = _settings(steps, image_temperature, image_top_p, text_temperature, text_top_p, top_k, seed)
            return _run(gr, lambda: session.caption_to_targets(text, targets, scale, settings, progress=True,
                                                                negative_prompt=negative_text), caption_outputs)

        rgb_button.click(run_rgb, [image, rgb_targets, *settings_inputs], list(rgb_outputs.values()))
        caption_button.click(run_caption, [caption, negative, caption_targets, guidance, *settings_inputs],
                             list(caption_outputs.values()))
    app.fourm_examples_dir, app.fourm_examples_scratch = str(examples_dir), scratch
    return app


def _answer_unreadable_files(gr, image) -> None:
    """Make the upload component ``image`` answer a file it cannot open (gr.Image opens every upload with
    PIL before the handler runs) with a message instead of an exception. Wraps the instance's method:
    subclassing a Gradio component would make Gradio write a ``.pyi`` stub next to this file."""
    preprocess = image.preprocess

    def preprocess_or_explain(payload):
        try:
            return preprocess(payload)
        except Exception as error:  # PIL's UnidentifiedImageError, truncated files, ...
            name = getattr(payload, "orig_name", None) or "the file"
            raise gr.Error(f"'{name}' is not an image this demo can read ({type(error).__name__}); upload a PNG, "
                           "JPEG or WebP photo.") from error

    image.preprocess = preprocess_or_explain


def _output_panel(gr, image_names: list[str], prefix: str, shown: list[str]) -> dict:
    """The output components, keyed like the session's views: images, caption, legend, boxes table. Only the
    ``shown`` panels (those of the targets ticked by default) are visible before the first run."""
    outputs = {}
    with gr.Column(scale=2):
        with gr.Row():
            for name in image_names:
                outputs[name] = gr.Image(label=OUTPUT_LABELS[name], type="pil", interactive=False,
                                         elem_id=f"{prefix}_{name}", format="png", visible=name in shown)
        if "semseg" in image_names:
            outputs["legend"] = gr.HTML(elem_id=f"{prefix}_legend", visible="legend" in shown)
        outputs["caption"] = gr.Textbox(label="caption", interactive=False, elem_id=f"{prefix}_caption",
                                        visible="caption" in shown)
        if "det" in image_names:
            outputs["boxes"] = gr.Dataframe(headers=BOX_COLUMNS, label="boxes (score: mean probability of the box's "
                                            "tokens; coordinates in [0, 1] of the square)", interactive=False,
                                            elem_id=f"{prefix}_boxes", visible="boxes" in shown)
    return outputs


def _settings(steps, image_temperature, image_top_p, text_temperature, text_top_p, top_k, seed) -> DecodingSettings:
    """The advanced-settings widgets' values (the number boxes give None when emptied: the defaults)."""
    return DecodingSettings(num_steps=steps, image_temperature=image_temperature, image_top_p=image_top_p,
                            text_temperature=text_temperature, text_top_p=text_top_p,
                            top_k=0 if top_k is None else top_k, seed=0 if seed is None else seed)


def _run(gr, compute, outputs: dict) -> list:
    """Run ``compute`` and map its views onto ``outputs``: the panels of the generated targets are shown with
    their values, every other panel is hidden. Bad input becomes a ``gr.Error`` message."""
    try:
        views = compute()
    except ValueError as error:
        raise gr.Error(str(error)) from error
    values = {name: views.get(name) if name != "boxes" else (views["boxes"] or None) for name in outputs}
    return [gr.update(value=values[name], visible=name in views["panels"]) for name in outputs]


def launch(checkpoint=None, port: int | None = None, host: str = "127.0.0.1", block: bool = True):
    """Build the app and serve it at ``http://host:port`` (port None: Gradio picks a free one from 7860).

    Prints the local URL. With ``block=False`` it returns the running app (``app.close()`` stops it).
    """
    gr = import_gradio()
    app = build_app(checkpoint)
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO_FONTS)  # no web fonts fetched
    app.queue().launch(server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False,
                       theme=theme, css=CSS, allowed_paths=[app.fourm_examples_dir], prevent_thread_lock=True, quiet=True)
    print(f"fourm-hf demo --web: running at {app.local_url} (Ctrl+C to stop)", flush=True)
    if block:
        try:
            app.block_thread()
        finally:
            app.close()
    return app
