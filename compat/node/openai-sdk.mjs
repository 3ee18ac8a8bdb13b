// The official `openai` Node SDK as an app uses it: `new OpenAI()` (OPENAI_BASE_URL, OPENAI_API_KEY from the
// environment) and `OpenAIRealtimeWS({model, reconnect: true})`, its own recovery after a recoverable close.
// Nothing here knows about TLS: over `rtsim serve --tls` Node trusts the CA through NODE_EXTRA_CA_CERTS.
import OpenAI from 'openai';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';
import { loadScenario, makeLog, playTurns, sessionConfig, sleep, streamAudio, turnAudio } from './scenario.mjs';

const scenario = loadScenario();
const log = makeLog('node-openai-sdk');
const client = new OpenAI();
const rt = new OpenAIRealtimeWS({ model: scenario.model, reconnect: true }, client);
let ended = null; // set when the SDK gave up (a close it does not recover from)

const configure = () => rt.send({ type: 'session.update', session: sessionConfig(scenario) });
let connected;
const firstSession = new Promise((resolve) => (connected = resolve));
rt.on('session.created', (event) => {
  log('connected', { session: event.session.id, url: String(rt.url) });
  configure(); // on every new session: the SDK's reconnect restores no configuration and no context
  connected();
});
rt.on('response.done', (event) => {
  const text = (event.response.output ?? [])
    .flatMap((item) => item.content ?? [])
    .map((part) => part.transcript ?? part.text ?? '')
    .join(' ');
  log('reply', { status: event.response.status, text });
});
rt.on('reconnecting', (event) => log('reconnecting', { ...event }));
rt.on('reconnected', () => log('reconnected'));
rt.on('close', (code, reason) => {
  ended = { code, reason: String(reason ?? '') };
  log('closed', ended);
});
rt.on('error', (error) => log('error', { message: String(error?.message ?? error) }));

async function say(turn) {
  if (ended) return; // nobody is listening any more: the turn is lost
  if ((turn.mode ?? 'text') === 'audio') {
    await streamAudio(turnAudio(turn), (chunk) =>
      rt.send({ type: 'input_audio_buffer.append', audio: chunk.toString('base64') }),
    );
    return;
  }
  rt.send({
    type: 'conversation.item.create',
    item: { type: 'message', role: 'user', content: [{ type: 'input_text', text: turn.say }] },
  });
  rt.send({ type: 'response.create' });
}

// As an app does: the user speaks once the session is there (turns due before then go at once).
const opened = await Promise.race([firstSession.then(() => true), sleep(10_000).then(() => false)]);
if (!opened) {
  log('fatal', { error: 'no session.created within 10 s' });
  process.exit(1);
}
await playTurns(scenario, log, say);
const failed = ended !== null;
rt.close({ code: 1000, reason: 'done' });
log('exit', { code: failed ? 1 : 0 });
setTimeout(() => process.exit(failed ? 1 : 0), 300);
