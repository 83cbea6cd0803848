"""The checkpoints the app knows by hub id: family, flavour, size, licence and whether the Hub gates them.

Checked against the model pages (January 2026 release of FLUX.2 [klein]): the 4 B pair is Apache-2.0
and open (no token, no licence click); the 9 B pair is under the FLUX Non-Commercial License and gated
like FLUX.1-dev (a token and the licence accepted on the model page). Each Klein size comes as a
step-distilled checkpoint (4 steps, for pictures) and a base one (undistilled, what LoRAs are trained
on: musubi-tuner's docs recommend it, ai-toolkit's Klein option loads it). Whether a base-trained LoRA
keeps its strength on the distilled checkpoint is not settled upstream (black-forest-labs/flux2 #38 is
open; unsloth #8267 reports the subject kept at 4 steps): the strength tester is to measure it.
`sibling` names the other flavour of the same size, so generation can prefer the distilled one.

`card_licence` is the same licence as a Hub model card's YAML writes it (`license`, `license_name`,
`license_link`), so a published LoRA names its base's real licence from this one table.

`architecture` names the full-size configs the memory planner counts (engines/builtin): the planned
GPU memory of a row comes from the model built on the meta device, never from a figure typed here.
"""
from __future__ import annotations

from dataclasses import dataclass

APACHE = "Apache-2.0"
FLUX_NC = "FLUX Non-Commercial License"
FLUX1_DEV_NC = "FLUX.1 [dev] Non-Commercial License"
# Each licence as the base models' own cards name it on the Hub: (license, license_name); "other" links the file.
HUB_LICENCES = {APACHE: ("apache-2.0", None), FLUX_NC: ("other", "flux-non-commercial-license"),
                FLUX1_DEV_NC: ("other", "flux-1-dev-non-commercial-license")}


@dataclass(frozen=True)
class Checkpoint:
    repo_id: str
    title: str
    family: str  # families.Family.key
    architecture: str  # engines/builtin full-size config the memory plan counts
    licence: str
    gated: bool  # the Hub asks for a token and the licence accepted on the model page
    distilled: bool = False
    editor: bool = False  # FLUX.1 Kontext: the sheet's transformer only
    sibling: str | None = None  # the other Klein flavour of this size

    @property
    def commercial(self) -> bool:
        return self.licence == APACHE

    @property
    def licence_page(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"

    @property
    def card_licence(self) -> tuple[str, str | None, str | None]:
        """(license, license_name, license_link) as the checkpoint's own Hub card writes them."""
        licence, name = HUB_LICENCES[self.licence]
        link = f"https://huggingface.co/{self.repo_id}/blob/main/LICENSE.md" if licence == "other" else None
        return licence, name, link

    def licence_text(self) -> str:
        access = ("gated: needs a Hugging Face token and the licence accepted on its page" if self.gated
                  else "open: no token needed")
        use = "commercial use allowed" if self.commercial else "non-commercial use only"
        return f"{self.licence} ({use}); {access}."


KLEIN_4B = "black-forest-labs/FLUX.2-klein-4B"
KLEIN_BASE_4B = "black-forest-labs/FLUX.2-klein-base-4B"
KLEIN_9B = "black-forest-labs/FLUX.2-klein-9B"
KLEIN_BASE_9B = "black-forest-labs/FLUX.2-klein-base-9B"

CHECKPOINTS = (
    Checkpoint("black-forest-labs/FLUX.1-dev", "FLUX.1-dev", "flux1", "flux1-dev", FLUX1_DEV_NC, gated=True),
    Checkpoint("black-forest-labs/FLUX.1-Kontext-dev", "FLUX.1-Kontext-dev", "flux1", "flux1-dev", FLUX1_DEV_NC,
               gated=True, editor=True),
    Checkpoint(KLEIN_4B, "FLUX.2 [klein] 4B", "flux2-klein", "klein-4b", APACHE, gated=False, distilled=True,
               sibling=KLEIN_BASE_4B),
    Checkpoint(KLEIN_BASE_4B, "FLUX.2 [klein] base 4B", "flux2-klein", "klein-4b", APACHE, gated=False,
               sibling=KLEIN_4B),
    Checkpoint(KLEIN_9B, "FLUX.2 [klein] 9B", "flux2-klein", "klein-9b", FLUX_NC, gated=True, distilled=True,
               sibling=KLEIN_BASE_9B),
    Checkpoint(KLEIN_BASE_9B, "FLUX.2 [klein] base 9B", "flux2-klein", "klein-9b", FLUX_NC, gated=True,
               sibling=KLEIN_9B),
)


def checkpoint(repo_id: str) -> Checkpoint | None:
    """The known checkpoint of this hub id (quantized re-uploads and folders are not known: None)."""
    return next((c for c in CHECKPOINTS if c.repo_id.lower() == (repo_id or "").lower()), None)
