"""Random container names in Docker's `adjective_noun` style (word lists of our own)."""

from __future__ import annotations

import secrets
from collections.abc import Container

ADJECTIVES = (
    "agile amber ancient azure bold brave bright brisk calm candid clever cosmic crisp curious daring "
    "deft eager earnest elegant epic fancy fearless fervent fluent frosty gallant gentle gifted glad "
    "golden graceful happy hardy hopeful humble jolly keen kind lively loyal lucid lucky merry mighty "
    "modest nimble noble patient placid plucky polite proud quick quiet radiant rapid serene sharp "
    "shiny silent sleek smooth snowy solid spry stoic sturdy sunny swift tender tidy tranquil upbeat "
    "valiant vibrant vivid warm wise witty zealous zesty"
).split()

NOUNS = (
    "albatross badger beaver bison bobcat caribou cheetah condor corgi coyote crane dingo dolphin "
    "eagle egret falcon ferret finch gazelle gecko gibbon heron hornet ibex jackal jaguar kestrel "
    "koala lemur leopard lynx magpie marmot marten meerkat mink moose narwhal ocelot osprey otter "
    "panda panther pelican penguin puffin quokka rabbit raven robin salmon seal sparrow stork swan "
    "tapir tiger toucan turtle urchin vulture walrus weasel whale wombat wren yak zebra"
).split()


def random_name(taken: Container[str]) -> str:
    """A name not in `taken`; after many collisions a numeric suffix, as Docker does."""
    for attempt in range(100):
        name = f"{secrets.choice(ADJECTIVES)}_{secrets.choice(NOUNS)}"
        if attempt >= 10:
            name += str(secrets.randbelow(10))
        if name not in taken:
            return name
    return f"container_{secrets.token_hex(6)}"
