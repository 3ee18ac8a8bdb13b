// `@openai/agents-realtime` over WebSocket from Node, as its docs set it up: a RealtimeAgent in a
// RealtimeSession, `connect({apiKey, url})`, typed turns with `sendMessage`, voice with `sendAudio`.
// The WebSocket transport has no reconnect of its own (0.20.0): a dropped session stays dropped.
import { RealtimeAgent, RealtimeSession } from '@openai/agents-realtime';
import { loadScenario, makeLog, playTurns, streamAudio, turnAudio } from './scenario.mjs';

const scenario = loadScenario();
const log = makeLog('node-agents-realtime');
const base = process.env.OPENAI_BASE_URL.replace(/\/$/, '').replace(/^http/, 'ws'); // https→wss, http→ws
const url = `${base}/realtime?model=${encodeURIComponent(scenario.model)}`;
const agent = new RealtimeAgent({ name: 'Assistant', instructions: scenario.instructions ?? 'Be brief.' });
const session = new RealtimeSession(agent, { transport: 'websocket', model: scenario.model });
let status = 'connecting';

session.transport.on('connection_change', (next) => {
  status = next;
  log('connection', { status: next });
});
session.transport.on('*', (event) => {
  if (event.type === 'session.created') log('connected', { session: event.session?.id });
  if (event.type === 'response.done') {
    const text = (event.response?.output ?? [])
      .flatMap((item) => item.content ?? [])
      .map((part) => part.transcript ?? part.text ?? '')
      .join(' ');
    log('reply', { status: event.response?.status, text });
  }
});
session.on('error', (error) => log('error', { message: String(error?.error?.message ?? error?.error ?? error) }));

try {
  await session.connect({ apiKey: process.env.OPENAI_API_KEY, url });
} catch (error) {
  log('fatal', { error: String(error?.message ?? error) });
  process.exit(1);
}

async function say(turn) {
  if (status !== 'connected') return; // the transport is gone: the turn is lost
  if ((turn.mode ?? 'text') === 'audio') {
    await streamAudio(turnAudio(turn), (chunk) => {
      if (status === 'connected') session.sendAudio(chunk.buffer.slice(chunk.byteOffset, chunk.byteOffset + chunk.length));
    });
    return;
  }
  session.sendMessage(turn.say);
}

await playTurns(scenario, log, say);
const failed = status !== 'connected';
session.close();
log('exit', { code: failed ? 1 : 0 });
setTimeout(() => process.exit(failed ? 1 : 0), 300);
