#!/usr/bin/env bash
# The Logos Chat demo: a local devnet, two users who find each other on chain, and a chat.
# Usage: scripts/demo.sh [DEMO_DIR]   (make demo runs it after make setup)
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${1:-$PWD/.demo}
LC=${LC:-$PWD/.venv/bin/logos-chat}
export LOGOS_CHAT_DEVNET_DIR="$DEMO_DIR/devnet"
export LOGOS_CHAT_PASSPHRASE=${LOGOS_CHAT_PASSPHRASE:-demo-passphrase}
A=(--home "$DEMO_DIR/alice")
B=(--home "$DEMO_DIR/bob")

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ logos-chat %s\033[0m\n' "$*"; "$LC" "$@"; }
field() { "$PWD/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# start from a clean slate every time (idempotent): stop the previous demo devnet, wipe it
"$LC" devnet down >/dev/null 2>&1 || true
rm -rf "$DEMO_DIR"

step "1. Start the devnet (anvil chain + NATS JetStream on loopback, registries deployed)"
show devnet up

step "2. alice and bob create identities: owner key, recovery phrase, device keys, on-chain registration"
show "${A[@]}" init --name alice
show "${B[@]}" init --name bob

step "3. Each publishes a fresh intro bundle (new signed prekey, seq+1)"
show "${A[@]}" publish
show "${B[@]}" publish

step "4. They look each other up: by name, by identity id, by owner address — verified, not trusted"
ALICE_ID=$("$LC" --json lookup alice | field identity_id)
ALICE_OWNER=$("$LC" --json lookup alice | field owner)
BOB_ID=$("$LC" --json lookup bob | field identity_id)
BOB_OWNER=$("$LC" --json lookup bob | field owner)
show "${A[@]}" lookup bob
show "${A[@]}" lookup "$BOB_ID"
show "${A[@]}" lookup "$BOB_OWNER"
show "${B[@]}" lookup alice
show "${B[@]}" lookup "$ALICE_ID"
show "${B[@]}" lookup "$ALICE_OWNER"

step "5. alice writes to bob while bob is offline (end-to-end encrypted, stored by JetStream)"
show "${A[@]}" send bob "Hi bob! Found you on chain."
show "${A[@]}" send bob "This went through a post-quantum handshake."

step "6. bob comes online, syncs, and replies"
show "${B[@]}" sync
show "${B[@]}" send alice "Hi alice, got both. Verified your keys on chain."

step "7. alice syncs; both see the same history"
show "${A[@]}" sync
show "${A[@]}" history bob
show "${B[@]}" conversations

step "8. A group: alice creates “team” with bob and carol; one message reaches everyone"
show --home "$DEMO_DIR/carol" init --name carol
show "${A[@]}" group create team --member bob --member carol
show "${B[@]}" sync
show --home "$DEMO_DIR/carol" sync
show "${B[@]}" group send team "Hello team — encrypted once, published once."
show "${A[@]}" sync
show --home "$DEMO_DIR/carol" sync

step "9. alice removes carol: every remaining sender key rotates, carol reads nothing after; alice renames the group"
show "${A[@]}" group remove team carol
show "${B[@]}" sync
show "${B[@]}" group send team "Only alice and I can read this."
show "${A[@]}" sync
show --home "$DEMO_DIR/carol" sync
show "${A[@]}" group rename team core
show "${A[@]}" group list core

step "10. alice links a second device: pairing code on the new one, approval on the old one"
A2=(--home "$DEMO_DIR/alice-laptop")
CODE=$("$LC" "${A2[@]}" --json devices link | field code)
printf '\033[2m$ logos-chat --home %s devices link   # prints the pairing code\033[0m\n%s\n' "$DEMO_DIR/alice-laptop" "$CODE"
show "${A[@]}" devices approve "$CODE"
show "${A2[@]}" sync
show "${A[@]}" devices list
show "${B[@]}" send alice "Hi alice — this reaches both of your devices."
show "${A[@]}" sync
show "${A2[@]}" sync

step "11. alice rotates her device keys; bob just chats on (one notice line, no reset)"
show "${A[@]}" keys rotate --installation
show "${A[@]}" send bob "Same me, fresh keys."
show "${B[@]}" sync
show "${B[@]}" history alice --limit 4

step "Done"
cat <<MSG
The devnet is still running, so you can go on by hand:
  export LOGOS_CHAT_DEVNET_DIR=$LOGOS_CHAT_DEVNET_DIR LOGOS_CHAT_PASSPHRASE=$LOGOS_CHAT_PASSPHRASE
  $LC --home $DEMO_DIR/bob chat alice        # and in another terminal:
  $LC --home $DEMO_DIR/alice chat bob
Stop it with: $LC devnet down    (or: make devnet-down)
MSG
