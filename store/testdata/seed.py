"""The seed's chat storage scheme ("使用Redis存储聊天数据的一种方案"), in small.

One list per conversation, named by keyname(a, b) ("43-23": the larger id
first), newest message at the head (LPUSH), each element
json.dumps({'fromid', 'toid', 'msg', 'time'}); and one hash per user, named
by the user id, mapping a conversation's keyname to that user's unread
count. msgsend bumps the count with a read-modify-write (HGET, then HSET):
the seed's own atomicity problem, kept here on purpose so chatd is tested
against what the seed really writes.

Used by store/seed_test.go: run as a program, it reads one JSON request per
line on stdin and writes one JSON reply per line on stdout:

  {"op": "send", "from": 23, "to": 43, "msg": "hi"}     -> {"ok": true}
  {"op": "read", "uid": 43, "other": 23}                 -> {"messages": [...]}
  {"op": "keyname", "a": 9, "b": 10}                     -> {"key": "10-9"}

Each message read back carries "types", the Python type name of each of its
fields, so the caller can tell an int from a float.

Usage: seed.py REDIS_URL [KEY_PREFIX]
"""

import json
import sys
import time

import redis


class Seed:
    def __init__(self, url, prefix=''):
        self.r = redis.Redis.from_url(url)
        # The seed writes unprefixed keys; a prefix is only for sharing a Redis.
        self.prefix = prefix

    @staticmethod
    def keyname(a, b):
        if a > b:
            return '%s-%s' % (a, b)
        return '%s-%s' % (b, a)

    def online(self, uid):
        """The seed's presence check, a stub: nobody is online."""
        return False

    def msgsend(self, fromid, toid, msg):
        key = self.keyname(fromid, toid)
        self.r.lpush(self.prefix + key, json.dumps({
            'fromid': fromid,
            'toid': toid,
            'msg': msg,
            'time': time.time(),
        }))
        if not self.online(toid):
            count = self.r.hget(self.prefix + str(toid), key)
            count = int(count) if count else 0
            self.r.hset(self.prefix + str(toid), key, count + 1)

    def msgread(self, uid, otherid):
        key = self.keyname(uid, otherid)
        self.r.hset(self.prefix + str(uid), key, 0)
        return [json.loads(m) for m in self.r.lrange(self.prefix + key, 0, -1)]


def serve(seed, requests, replies):
    for line in requests:
        req = json.loads(line)
        op = req.get('op')
        try:
            if op == 'send':
                seed.msgsend(req['from'], req['to'], req['msg'])
                reply = {'ok': True}
            elif op == 'read':
                messages = seed.msgread(req['uid'], req['other'])
                for m in messages:
                    m['types'] = {k: type(v).__name__ for k, v in m.items()}
                reply = {'messages': messages}
            elif op == 'keyname':
                reply = {'key': seed.keyname(req['a'], req['b'])}
            else:
                reply = {'error': 'unknown op %r' % (op,)}
        except Exception as e:  # reported to the caller, which fails the test
            reply = {'error': '%s: %s' % (type(e).__name__, e)}
        replies.write(json.dumps(reply) + '\n')
        replies.flush()


if __name__ == '__main__':
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    serve(Seed(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else ''), sys.stdin, sys.stdout)
