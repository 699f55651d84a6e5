// CartPole in JavaScript: puffer/envs/cartpole.py (gymnasium CartPole-v1's physics, termination and
// 500-step truncation) in float32 arithmetic, plus a canvas renderer. Used by the page of `puffer export --web`.
"use strict";

const CP = {
  gravity: 9.8, massCart: 1.0, massPole: 0.1, length: 0.5, forceMag: 10.0, tau: 0.02,
  thetaThreshold: (12 * 2 * Math.PI) / 360, xThreshold: 2.4,
};
CP.totalMass = CP.massCart + CP.massPole;
CP.poleMassLength = CP.massPole * CP.length;

class CartPole {
  constructor(random, maxEpisodeSteps = 500) {
    this.random = random;  // () => uniform in [0, 1)
    this.maxEpisodeSteps = maxEpisodeSteps;
    this.state = [0, 0, 0, 0];
    this.steps = 0;
  }

  reset() {
    this.state = this.state.map(() => Math.fround(this.random() * 0.1 - 0.05));
    this.steps = 0;
    return this.state.slice();
  }

  step(action) {
    const f = Math.fround;
    let [x, xDot, theta, thetaDot] = this.state;
    const force = action === 1 ? CP.forceMag : -CP.forceMag;
    const cos = f(Math.cos(theta)), sin = f(Math.sin(theta));
    const temp = f(f(force + f(f(f(thetaDot * thetaDot) * sin) * f(CP.poleMassLength))) * f(1 / CP.totalMass));
    const denom = f(f(CP.length * 4 / 3) - f(f(cos * cos) * f(CP.length * CP.massPole / CP.totalMass)));
    const thetaAcc = f(f(f(CP.gravity) * sin - f(cos * temp)) / denom);
    const xAcc = f(temp - f(f(thetaAcc * cos) * f(CP.poleMassLength / CP.totalMass)));
    // explicit Euler: positions move with the old velocities
    x = f(x + f(CP.tau * xDot));
    theta = f(theta + f(CP.tau * thetaDot));
    xDot = f(xDot + f(CP.tau * xAcc));
    thetaDot = f(thetaDot + f(CP.tau * thetaAcc));
    this.state = [x, xDot, theta, thetaDot];
    this.steps += 1;
    const terminated = Math.abs(x) > CP.xThreshold || Math.abs(theta) > CP.thetaThreshold;
    const truncated = this.steps >= this.maxEpisodeSteps;
    return { obs: this.state.slice(), reward: 1, terminated, truncated };
  }

  draw(ctx) {
    const { width, height } = ctx.canvas;
    const scale = width / (2 * CP.xThreshold * 1.2);
    const [x, , theta] = this.state;
    const groundY = height * 0.7, cartX = width / 2 + x * scale;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, width, height);
    ctx.strokeStyle = "#999";
    ctx.beginPath();
    ctx.moveTo(0, groundY);
    ctx.lineTo(width, groundY);
    ctx.stroke();
    ctx.fillStyle = "#333";
    ctx.fillRect(cartX - 25, groundY - 15, 50, 30);
    const poleLength = 2 * CP.length * scale;
    ctx.strokeStyle = "#c9803a";
    ctx.lineWidth = 8;
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.moveTo(cartX, groundY - 15);
    ctx.lineTo(cartX + poleLength * Math.sin(theta), groundY - 15 - poleLength * Math.cos(theta));
    ctx.stroke();
    ctx.lineWidth = 1;
    ctx.fillStyle = "#4a7fb5";
    ctx.beginPath();
    ctx.arc(cartX, groundY - 15, 4, 0, 2 * Math.PI);
    ctx.fill();
  }
}

window.pufferEnvs = Object.assign(window.pufferEnvs || {}, {
  cartpole: (random, kwargs) => new CartPole(random, kwargs.max_episode_steps ?? 500),
});
