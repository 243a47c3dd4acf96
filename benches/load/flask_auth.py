"""The Flask verify service of the original stack (system (c) of the load
benchmark): nginx asks it about every /api/ request with `auth_request /auth`.

It checks `Authorization: Bearer <token>` as the article's service does, with
PyJWT: HS256 only, the shared secret, the issuer, `exp` required, and the
`user_id` claim, which it hands back to nginx as `X-User-Id`. It accepts the
tokens that `colorgate token issue` mints from the same secret file (raw key
bytes, one trailing newline dropped, as colorgate reads it).

Environment: BENCH_JWT_SECRET_FILE (required), BENCH_JWT_ISSUER (default
deoldify_api_gateway).

    python flask_auth.py --port 5000         # Flask's development server, threaded
    gunicorn -w 2 -b 127.0.0.1:5000 flask_auth:app
"""

import argparse
import os

import jwt
from flask import Flask, jsonify, request


def _load_secret():
    with open(os.environ["BENCH_JWT_SECRET_FILE"], "rb") as f:
        key = f.read()
    return key[:-1] if key.endswith(b"\n") else key


SECRET = _load_secret()
ISSUER = os.environ.get("BENCH_JWT_ISSUER", "deoldify_api_gateway")

app = Flask(__name__)


def _unauthorized(message):
    return jsonify(error="unauthorized", message=message), 401


@app.route("/auth")
def auth():
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("请提供有效的访问令牌")
    try:
        claims = jwt.decode(
            token.strip(),
            SECRET,
            algorithms=["HS256"],
            issuer=ISSUER,
            leeway=30,
            options={"require": ["exp"]},
        )
    except jwt.ExpiredSignatureError:
        return _unauthorized("令牌已过期")
    except jwt.InvalidTokenError:
        return _unauthorized("无效的令牌")
    user_id = claims.get("user_id")
    if not user_id:
        return _unauthorized("无效的令牌")
    response = jsonify(status="ok", user_id=user_id)
    response.headers["X-User-Id"] = str(user_id)
    return response


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    app.run(host=args.host, port=args.port, threaded=True)
