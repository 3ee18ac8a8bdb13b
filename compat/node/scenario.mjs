// What every Node adapter of the compatibility matrix shares: the rtsim client interface (clients/README.md)
// read from the environment, the turn schedule, the JSON log on stdout, and a voice turn as microphone audio.
import { readFileSync, writeFileSync } from 'node:fs';

export const CHUNK_BYTES = 960; // 20 ms of pcm16 mono at 24 kHz: one microphone callback

export function loadScenario() {
  const path = process.env.RTSIM_SCENARIO;
  if (!path || !process.env.OPENAI_BASE_URL || !process.env.OPENAI_API_KEY) {
    console.error('missing environment: OPENAI_BASE_URL, OPENAI_API_KEY and RTSIM_SCENARIO are needed');
    process.exit(2);
  }
  const scenario = JSON.parse(readFileSync(path, 'utf8'));
  scenario.turns = [...scenario.turns].sort((a, b) => a.at - b.at).filter((turn) => turn.at <= scenario.end_at);
  return scenario;
}

export function makeLog(client) {
  const started = performance.now();
  // The scenario clock starts now; a harness that waits for RTSIM_READY_FILE starts its faults with it.
  if (process.env.RTSIM_READY_FILE) writeFileSync(process.env.RTSIM_READY_FILE, '');
  const log = (event, fields = {}) => {
    const t = Math.round(performance.now() - started) / 1000;
    process.stdout.write(JSON.stringify({ t, client, event, ...fields }) + '\n');
  };
  log.elapsed = () => (performance.now() - started) / 1000;
  return log;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** The turn's voice: the file rtsim rendered for it (pcm16 24 kHz mono, trailing silence included). */
export function turnAudio(turn) {
  if (!turn.audio_file) throw new Error(`audio turn ${JSON.stringify(turn.say)} has no audio_file`);
  return readFileSync(turn.audio_file);
}

/** Play `pcm` like a microphone: 20 ms chunks in real time, each handed to `send(chunk)`. */
export async function streamAudio(pcm, send) {
  const started = performance.now();
  for (let offset = 0, n = 0; offset < pcm.length; offset += CHUNK_BYTES, n += 1) {
    send(pcm.subarray(offset, offset + CHUNK_BYTES));
    await sleep(started + (n + 1) * 20 - performance.now());
  }
}

/** Say every turn at its time (seconds since `log` started), then wait until end_at plus a short grace. */
export async function playTurns(scenario, log, say, graceSeconds = 1.5) {
  for (const [index, turn] of scenario.turns.entries()) {
    await sleep((turn.at - log.elapsed()) * 1000);
    log('turn_sent', { turn: index, mode: turn.mode ?? 'text', text: turn.say });
    await say(turn, index);
  }
  await sleep((scenario.end_at - log.elapsed()) * 1000);
  await sleep(graceSeconds * 1000);
}

export function sessionConfig(scenario) {
  const config = { type: 'realtime' };
  if (scenario.instructions != null) config.instructions = scenario.instructions;
  if (scenario.tools?.length) config.tools = scenario.tools;
  return config;
}
