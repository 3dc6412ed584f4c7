"""``manage.py models list | add PATH [--name N] | pull HF_ID [--name N] [--revision R]``."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from explainer.llm.catalog import BUNDLED_NAME, bundled
from explainer.llm.interface import ModelLoadError
from explainer.web.runner import catalog


class Command(BaseCommand):
    help = ("List, add and download the models the explainer can serve besides its bundled one: "
            "Hugging Face-layout folders (config.json, *.safetensors, tokenizer.json) in EXPLAINER_MODELS_DIR.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="the installed models and whether each opens")
        a = sub.add_parser("add", help="check a downloaded model folder and copy it into the models directory "
                                       "(a folder holding symbolic links is refused: copy the files themselves)")
        a.add_argument("path")
        a.add_argument("--name", help="the name the API, menus and links use (default: the folder's name)")
        p = sub.add_parser("pull", help="download a model from the Hugging Face Hub, then add it")
        p.add_argument("hf_id", help="owner/name, for example HuggingFaceTB/SmolLM2-135M-Instruct")
        p.add_argument("--name")
        p.add_argument("--revision")

    def handle(self, *args, action, **opts):
        cat = catalog()
        try:
            if action == "list":
                b = bundled()
                self.stdout.write(f"{BUNDLED_NAME:32}  bundled · {b.model.n_params / 1e6:.1f}M parameters · answers every claude-* name")
                entries = cat.entries()
                for e in entries:
                    self.stdout.write(f"{e.name:32}  {e.summary}" if e.ok else f"{e.name:32}  CANNOT OPEN: {e.summary}")
                if not entries:
                    self.stdout.write(f"(no other models in {cat.root}; add one with: manage.py models add PATH)")
            elif action == "add":
                e = cat.add(Path(opts["path"]), opts.get("name"))
                self.stdout.write(f"added {e.name}: {e.summary}\nIt is now offered on Compose and answers the API's model {e.name!r}.")
            elif action == "pull":
                self.stdout.write(f"downloading {opts['hf_id']} …")
                e = cat.pull(opts["hf_id"], opts.get("name"), opts.get("revision"))
                self.stdout.write(f"added {e.name}: {e.summary}")
        except ModelLoadError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:  # the models directory cannot be written, the disk is full: a sentence, not a traceback
            raise CommandError(f"{exc.filename or cat.root} cannot be written ({exc.strerror or exc}).") from None
